"""Row MACs: a MAC column on every security-relevant table, the rows each event wrote.

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-30

The migration has no key, so it adds the columns empty; ``randomizer db upgrade``
(which runs with the key) computes the MACs of the rows already there in the same
transaction (:func:`randomizer.rows.seal_unsealed`). See docs/architecture.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ("trial", "users", "user_sites", "strata", "slots", "participants", "kits")


def upgrade() -> None:
    """Add ``row_mac`` to each covered table and ``rows`` to the audit events."""
    for table in TABLES:
        op.add_column(table, sa.Column("row_mac", sa.LargeBinary(), nullable=True))
    op.add_column("audit_events", sa.Column("rows", sa.Text(), nullable=True))


def downgrade() -> None:
    """Refused: a trial database is never downgraded in place; restore a backup instead."""
    raise NotImplementedError("restore a backup instead of downgrading")
