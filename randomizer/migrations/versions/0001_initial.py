"""Initial schema: trial, users, strata, slots, participants, kits, audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# On PostgreSQL the audit table refuses UPDATE, DELETE and TRUNCATE for every
# role, the owner included, unless a superuser disables the trigger on purpose.
AUDIT_GUARD = """
CREATE FUNCTION randomizer_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION randomizer_audit_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION randomizer_audit_append_only();
"""


def upgrade() -> None:
    """Create every table of schema 0001."""
    op.create_table(
        "trial",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("design_toml", sa.Text(), nullable=False),
        sa.Column("design_digest", sa.String(64), nullable=False),
        sa.Column("wrapped_data_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("seed_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("list_digest", sa.String(64), nullable=True),
        sa.Column("list_generated_at", sa.DateTime(), nullable=True),
        sa.Column("locked_at", sa.DateTime(), nullable=True),
        sa.Column("locked_by", sa.String(64), nullable=True),
        sa.Column("lock_reason", sa.Text(), nullable=True),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "strata",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(512), nullable=False, unique=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("planned", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("next_sequence", sa.Integer(), nullable=False),
    )
    op.create_table(
        "slots",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("stratum_id", sa.Integer(), sa.ForeignKey("strata.id"), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("allocation_sealed", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("stratum_id", "sequence"),
    )
    op.create_table(
        "participants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("site", sa.String(32), nullable=False),
        sa.Column("stratum_id", sa.Integer(), sa.ForeignKey("strata.id"), nullable=False),
        sa.Column("slot_id", sa.Integer(), sa.ForeignKey("slots.id"), nullable=False, unique=True),
        sa.Column("randomization_number", sa.String(32), nullable=False, unique=True),
        sa.Column("randomized_on", sa.Date(), nullable=False),
        sa.Column("randomized_at", sa.DateTime(), nullable=False),
        sa.Column("randomized_by", sa.String(64), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("emergency_unblinded_at", sa.DateTime(), nullable=True),
        sa.Column("emergency_unblinded_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_participants_stratum_id", "participants", ["stratum_id"])
    op.create_table(
        "kits",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(9), nullable=False, unique=True),
        sa.Column("content_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("slot_id", sa.Integer(), sa.ForeignKey("slots.id"), nullable=True),
        sa.Column("visit", sa.Integer(), nullable=True),
        sa.Column("spare", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("participant_id", sa.Integer(), sa.ForeignKey("participants.id"), nullable=True),
        sa.Column("dispensed_at", sa.DateTime(), nullable=True),
        sa.Column("visit_date", sa.Date(), nullable=True),
        sa.Column("prepared_at", sa.DateTime(), nullable=True),
        sa.Column("prepared_by", sa.String(64), nullable=True),
        sa.Column("replaces_kit_id", sa.Integer(), sa.ForeignKey("kits.id"), nullable=True),
        sa.Column("void_reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_kits_slot_id", "kits", ["slot_id"])
    op.create_index("ix_kits_participant_id", "kits", ["participant_id"])
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_mac", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(AUDIT_GUARD)


def downgrade() -> None:
    """Refused: a trial database is never downgraded in place; restore a backup instead."""
    raise NotImplementedError("restore a backup instead of downgrading")
