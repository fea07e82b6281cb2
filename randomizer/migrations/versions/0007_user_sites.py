"""Per-site rights: the sites a user is limited to.

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``user_sites`` (empty: every existing user stays trial-wide)."""
    op.create_table(
        "user_sites",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("site", sa.String(32), nullable=False),
        sa.UniqueConstraint("user_id", "site"),
    )
    op.create_index("ix_user_sites_user_id", "user_sites", ["user_id"])


def downgrade() -> None:
    """Refused: a trial database is never downgraded in place; restore a backup instead."""
    raise NotImplementedError("restore a backup instead of downgrading")
