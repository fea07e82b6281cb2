"""Typed ORM tables. No business rules here: the service layer owns them.

Blinded values (a slot's arm, a kit's content, the seed) exist here only as
sealed bytes of one fixed length per kind; everything else is plain data that
reveals no arm (kit codes are random, slot order is the list order).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every engine (SQLite keeps no zone of its own)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store as naive UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("times must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Read back as aware UTC."""
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class Trial(Base):
    """The one trial a database serves, its design, wrapped data key and state."""

    __tablename__ = "trial"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    design_toml: Mapped[str] = mapped_column(Text)
    design_digest: Mapped[str] = mapped_column(String(64))
    wrapped_data_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seed_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    list_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    list_generated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    locked_by: Mapped[str | None] = mapped_column(String(64), default=None)
    lock_reason: Mapped[str | None] = mapped_column(Text, default=None)
    key_format: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    """How the trial's keys are stored: 1, the data key only (MAC keys derived from it);
    2, the data key and both MAC keys each wrapped by the trial key (see vault.py)."""
    wrapped_audit_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    wrapped_row_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    list_generated_by: Mapped[str | None] = mapped_column(String(64), default=None)
    list_state: Mapped[str | None] = mapped_column(String(16), default=None)
    """``draft`` once generated, ``approved`` once a second user approved it; None before."""
    list_approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    list_approved_by: Mapped[str | None] = mapped_column(String(64), default=None)
    row_mac: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """HMAC-SHA256 of the row's identity and covered columns (:mod:`randomizer.rows`)."""


class User(Base):
    """A person who uses the tool, with one role and a salted password hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(512))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    row_mac: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """HMAC-SHA256 of the row's identity and covered columns (:mod:`randomizer.rows`)."""


class UserSite(Base):
    """A site a user is limited to; a user with no rows here acts trial-wide."""

    __tablename__ = "user_sites"
    __table_args__ = (UniqueConstraint("user_id", "site"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    site: Mapped[str] = mapped_column(String(32))
    row_mac: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """HMAC-SHA256 of the row's identity and covered columns (:mod:`randomizer.rows`)."""


class Stratum(Base):
    """A stratum of the list; ``next_sequence`` is the counter row locked to randomize."""

    __tablename__ = "strata"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(512), unique=True)
    position: Mapped[int] = mapped_column(Integer)
    planned: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    next_sequence: Mapped[int] = mapped_column(Integer, default=1)
    row_mac: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """HMAC-SHA256 of the row's identity and covered columns (:mod:`randomizer.rows`)."""


class Slot(Base):
    """One entry of the allocation list.

    Its arm, block number and block size are sealed together: block boundaries
    in plain text would help predict the last arms of each block.
    """

    __tablename__ = "slots"
    __table_args__ = (UniqueConstraint("stratum_id", "sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stratum_id: Mapped[int] = mapped_column(ForeignKey("strata.id"))
    sequence: Mapped[int] = mapped_column(Integer)
    allocation_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    row_mac: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """HMAC-SHA256 of the row's identity and covered columns (:mod:`randomizer.rows`)."""


class Participant(Base):
    """A randomized participant and the slot it took (exactly one, never shared)."""

    __tablename__ = "participants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    site: Mapped[str] = mapped_column(String(32))
    stratum_id: Mapped[int] = mapped_column(ForeignKey("strata.id"), index=True)
    slot_id: Mapped[int] = mapped_column(ForeignKey("slots.id"), unique=True)
    randomization_number: Mapped[str] = mapped_column(String(32), unique=True)
    randomized_on: Mapped[date] = mapped_column(Date)
    randomized_at: Mapped[datetime] = mapped_column(UTCDateTime())
    randomized_by: Mapped[str] = mapped_column(String(64))
    answers: Mapped[dict[str, str]] = mapped_column(JSON)
    emergency_unblinded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    emergency_unblinded_by: Mapped[str | None] = mapped_column(String(64), default=None)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    """Set when the randomization was made in error; the slot stays used."""
    voided_by: Mapped[str | None] = mapped_column(String(64), default=None)
    void_reason: Mapped[str | None] = mapped_column(Text, default=None)
    randomization_meaning: Mapped[str | None] = mapped_column(Text, default=None)
    """The meaning of the investigator's electronic signature of the randomization."""
    void_meaning: Mapped[str | None] = mapped_column(Text, default=None)
    """The meaning of the admin's electronic signature of the void."""
    row_mac: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """HMAC-SHA256 of the row's identity and covered columns (:mod:`randomizer.rows`)."""


# ids are found in upper case (:func:`randomizer.sealed.participant_named`)
Index("ix_participants_code_upper", func.upper(Participant.code))


class Kit(Base):
    """A kit: a random code and its sealed content.

    Dosing kits belong to a slot and a visit; spares have neither until issued
    as a replacement. Status: ``available``, ``dispensed``, ``prepared``, ``voided``.
    """

    __tablename__ = "kits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(9), unique=True)
    content_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    slot_id: Mapped[int | None] = mapped_column(ForeignKey("slots.id"), default=None, index=True)
    visit: Mapped[int | None] = mapped_column(Integer, default=None)
    spare: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="available")
    participant_id: Mapped[int | None] = mapped_column(
        ForeignKey("participants.id"), default=None, index=True
    )
    dispensed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    visit_date: Mapped[date | None] = mapped_column(Date, default=None)
    prepared_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    prepared_by: Mapped[str | None] = mapped_column(String(64), default=None)
    replaces_kit_id: Mapped[int | None] = mapped_column(ForeignKey("kits.id"), default=None)
    void_reason: Mapped[str | None] = mapped_column(Text, default=None)
    row_mac: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """HMAC-SHA256 of the row's identity and covered columns (:mod:`randomizer.rows`)."""


class AuditRecord(Base):
    """One event of the hash-chained audit trail (append-only)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256), index=True)
    """What the event is about (a participant, a kit, a user); indexed for a kit's events."""
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[str] = mapped_column(Text)
    prev_mac: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
    rows: Mapped[str | None] = mapped_column(Text, default=None)
    """JSON: per table, the count and MAC-sum change of the rows the event wrote (or NULL)."""


class AuditHead(Base):
    """The single head row of the audit chain, locked to serialise appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(String(64))


class AuthToken(Base):
    """A login of the API (bearer token) or the web pages (session cookie).

    Only the SHA-256 of the secret is stored; ``token_id`` is a public id for
    audit records and logs. A token is never deleted: logout, disable and a
    password change set ``revoked_at``.
    """

    __tablename__ = "auth_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    idle_seconds: Mapped[int] = mapped_column(Integer)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_reason: Mapped[str | None] = mapped_column(Text, default=None)
    client: Mapped[str] = mapped_column(String(128))


class LoginFailure(Base):
    """Failed logins counted under one key (``user:NAME`` or ``client:ADDRESS``)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class UnblindingReview(Base):
    """The second-person review of one emergency unblinding, open until closed with a note.

    It holds the reason and who unblinded when, never the arm: the reviewer is
    an admin or a monitor other than the unblinder.
    """

    __tablename__ = "unblinding_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    audit_seq: Mapped[int] = mapped_column(Integer)
    unblinded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    unblinded_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    closed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)


class OutboxMessage(Base):
    """A notification e-mail, written in the transaction of the event it reports.

    ``status`` is ``pending`` until an SMTP server accepted it, then ``sent``;
    ``next_attempt_at`` is when a sender may try it next (exponential back-off).
    Recipients come from the sender's configuration when it sends.
    """

    __tablename__ = "mail_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    sent_to: Mapped[str | None] = mapped_column(Text, default=None)
