"""Second-person review of emergency unblindings, and the outbox of notification e-mails.

Revision ID: 0006
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``unblinding_reviews`` and ``mail_outbox``; open a review of every past unblinding."""
    reviews = op.create_table(
        "unblinding_reviews",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("participant_id", sa.Integer(), sa.ForeignKey("participants.id"), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.Column("unblinded_at", sa.DateTime(), nullable=False),
        sa.Column("unblinded_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("closed_by", sa.String(64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_unblinding_reviews_participant_id", "unblinding_reviews", ["participant_id"]
    )
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_id", sa.String(255), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("sent_to", sa.Text(), nullable=True),
    )
    op.create_index("ix_mail_outbox_status", "mail_outbox", ["status"])
    # Unblindings made before this release are reviewed too: their reason is in the trail.
    bind = op.get_bind()
    past = bind.execute(
        sa.text(
            'SELECT e.seq, e.at, e."user", e.reason, p.id FROM audit_events e '
            "JOIN participants p ON p.code = e.subject "
            "WHERE e.action = 'unblind.emergency' ORDER BY e.seq"
        )
    ).all()
    if past:
        op.bulk_insert(
            reviews,
            [
                {
                    "participant_id": participant_id,
                    "audit_seq": seq,
                    "unblinded_at": datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ")
                    .replace(tzinfo=UTC)
                    .replace(tzinfo=None),
                    "unblinded_by": user,
                    "reason": reason,
                }
                for seq, at, user, reason, participant_id in past
            ],
        )


def downgrade() -> None:
    """Refused: a trial database is never downgraded in place; restore a backup instead."""
    raise NotImplementedError("restore a backup instead of downgrading")
