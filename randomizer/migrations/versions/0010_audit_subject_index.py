"""An index on the audit events' subject: a kit lookup finds the events that issued it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

The pharmacist's lookup of one kit names who issued it, from the events whose subject
is the kit's participant or the kit it replaced; without the index that is a scan of
the whole trail on every lookup. Nothing is rewritten: the trail stays as it is.
"""

from __future__ import annotations

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Index ``audit_events.subject``."""
    op.create_index("ix_audit_events_subject", "audit_events", ["subject"])


def downgrade() -> None:
    """Refused: a trial database is never downgraded in place; restore a backup instead."""
    raise NotImplementedError("restore a backup instead of downgrading")
