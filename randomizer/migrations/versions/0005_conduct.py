"""Conduct: list approval by a second person, participants randomized in error, signatures.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the list's state and approval to ``trial``; the void columns and the meanings of
    the randomization's and the void's electronic signatures to ``participants``.

    A list generated before this release was already in use without an approval
    step: it becomes ``approved`` (by no one, which ``list status`` shows), so
    the trial goes on; a new list starts as ``draft``.
    """
    with op.batch_alter_table("trial") as batch:
        batch.add_column(sa.Column("list_generated_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("list_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("list_approved_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("list_approved_by", sa.String(64), nullable=True))
    op.execute("UPDATE trial SET list_state = 'approved' WHERE seed_sealed IS NOT NULL")
    with op.batch_alter_table("participants") as batch:
        batch.add_column(sa.Column("voided_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("voided_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("void_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("randomization_meaning", sa.Text(), nullable=True))
        batch.add_column(sa.Column("void_meaning", sa.Text(), nullable=True))


def downgrade() -> None:
    """Refused: a trial database is never downgraded in place; restore a backup instead."""
    raise NotImplementedError("restore a backup instead of downgrading")
