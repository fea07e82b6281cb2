"""Key format 2: the audit and row MAC keys wrapped beside the data key.

A database made before this revision keeps key format 1 (its MAC keys are derived
from the data key); the first ``key rotate`` after the upgrade stores them wrapped
and sets key format 2. Nothing is rewritten here: the migration holds no key.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``key_format`` (1 for every existing trial) and the two wrapped MAC keys."""
    op.add_column(
        "trial",
        sa.Column("key_format", sa.Integer(), nullable=False, server_default=sa.text("1")),
    )
    op.add_column("trial", sa.Column("wrapped_audit_key", sa.LargeBinary(), nullable=True))
    op.add_column("trial", sa.Column("wrapped_row_key", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    """Refused: a trial database is never downgraded in place; restore a backup instead."""
    raise NotImplementedError("restore a backup instead of downgrading")
