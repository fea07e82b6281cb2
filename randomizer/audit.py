"""Append-only, hash-chained, MAC'd audit trail with signed checkpoints.

See docs/architecture.md section 8.

Each event's MAC is HMAC-SHA256(audit key, previous MAC || canonical JSON of
the event). Whoever holds the key could recompute a whole chain, and no chain
shows a cut tail, so the head is also anchored outside the database by an
Ed25519-signed checkpoint note kept by someone else (QA, say).

Stored format 2 (issue 13): the ``details`` column holds the details in the canonical
form that the MAC input embeds (:func:`details_text`), so :func:`verify` builds an
event's MAC input from the stored text by concatenation (:func:`stored_body`) without
parsing and re-serialising it. The MAC input itself is unchanged: events stored
before (format 1, details with spaces after ``,`` and ``:``) verify as they always
did, through :func:`canonical` of the parsed details, when the concatenation does not
match.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from randomizer.errors import AuditError, Hint, InvalidInput
from randomizer.models import AuditHead
from randomizer.models import AuditRecord as AuditRow
from randomizer.results import AuditEvent as AuditEvent
from randomizer.results import ChainReport as ChainReport
from randomizer.results import Checkpoint as Checkpoint
from randomizer.rows import take_written

if TYPE_CHECKING:  # the operation context imports this module
    from randomizer.context import Operation

GENESIS_MAC = "0" * 64
NOTE_HEADER = "randomizer audit checkpoint v1"
VERIFY_BATCH = 10_000

USER_MAX = 64
"""Longest user name an event stores (the column's width); a longer one is cut."""
SUBJECT_MAX = 256
"""Longest subject an event stores (the column's width); a longer one is cut."""
REASON_MAX = 2000
"""Longest reason an event stores, as the commands and the API accept; a longer one is cut."""


def utc_text(now: datetime) -> str:
    """ISO 8601 UTC text with microseconds and a Z, the trail's time format."""
    if now.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(
    seq: int,
    at: str,
    user: str,
    role: str,
    action: str,
    subject: str,
    reason: str,
    details: Mapping[str, Any],
    rows: Mapping[str, Any] | None = None,
) -> bytes:
    """The exact bytes an event's MAC covers (sorted keys, no spaces, UTF-8).

    ``rows``, the record of the covered rows the event wrote (:mod:`randomizer.rows`),
    is covered when there is one; an event that wrote none has the bytes it always had.
    """
    event: dict[str, Any] = {
        "seq": seq,
        "at": at,
        "user": user,
        "role": role,
        "action": action,
        "subject": subject,
        "reason": reason,
        "details": details,
    }
    if rows is not None:
        event["rows"] = rows
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def details_text(details: Mapping[str, Any]) -> str:
    """The ``details`` column as stored since format 2: the canonical JSON that
    :func:`canonical` embeds (sorted keys, no spaces, not ASCII-escaped)."""
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_text = encode_basestring  # the string form of json.dumps(ensure_ascii=False)


def stored_body(
    seq: int,
    at: str,
    user: str,
    role: str,
    action: str,
    subject: str,
    reason: str,
    details: str,
    rows: str | None = None,
) -> bytes:
    """:func:`canonical` of an event whose details (and rows record) are given as stored text.

    Equal to ``canonical(..., json.loads(details), json.loads(rows))`` when both are in
    the canonical form of :func:`details_text` (the keys are in sorted order here, as
    there). Each text field is a self-delimiting JSON string, so different stored fields
    never give the same bytes: a MAC that matches them proves the stored bytes are the
    ones MAC'd.
    """
    written = "" if rows is None else f'"rows":{rows},'
    return (
        f'{{"action":{_text(action)},"at":{_text(at)},"details":{details},'
        f'"reason":{_text(reason)},"role":{_text(role)},{written}"seq":{seq:d},'
        f'"subject":{_text(subject)},"user":{_text(user)}}}'
    ).encode()


_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


class ChainMac:
    """HMAC-SHA256 under one key, for many messages: the same value as ``hmac.digest``.

    RFC 2104 with the padded key's two SHA-256 states computed once: each message then
    costs two state copies and its own hashing, less than half of ``hmac.digest``, which
    looks the hash up and pads the key again for every message (a test checks both agree).
    """

    def __init__(self, key: bytes) -> None:
        """Hash the inner and outer padded key once."""
        if len(key) > 64:  # SHA-256's block size
            key = hashlib.sha256(key).digest()
        padded = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(padded.translate(_INNER_PAD))
        self._outer = hashlib.sha256(padded.translate(_OUTER_PAD))

    def digest(self, message: bytes) -> bytes:
        """HMAC-SHA256(key, message)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def event_mac(key: bytes, prev_mac: str, body: bytes) -> str:
    """HMAC-SHA256(key, previous MAC || body), hex."""
    return hmac.digest(key, bytes.fromhex(prev_mac) + body, "sha256").hex()


def start_chain(session: Session) -> None:
    """Create the head row of an empty trail (once, at init)."""
    session.add(AuditHead(id=1, seq=0, mac=GENESIS_MAC))


_EVENTS = cast(Table, AuditRow.__table__)
_HEADS = cast(Table, AuditHead.__table__)
# built once: every action runs them, and building a statement costs more than running it
_HEAD_LOCKED = select(_HEADS.c.seq, _HEADS.c.mac).where(_HEADS.c.id == 1).with_for_update()
_FIRST_BEYOND = select(func.min(_EVENTS.c.seq)).where(_EVENTS.c.seq > bindparam("seq"))
_INSERT_EVENT = insert(_EVENTS)
_MOVE_HEAD = (
    update(_HEADS).where(_HEADS.c.id == 1).values(seq=bindparam("seq"), mac=bindparam("mac"))
)

_HEAD = "randomizer.audit.head"
"""Session info: the head this transaction holds locked and last wrote, (seq, MAC)."""


def lock_head(session: Session) -> tuple[int, str]:
    """The head, locked for this transaction; read once per transaction, then remembered
    (the lock keeps every other writer out until commit).

    Every action takes it first (:func:`randomizer.context.operation`), before any row
    it writes: one lock order for all writers. A randomization that locked its stratum
    and then the head deadlocked on PostgreSQL against one whose login event held the
    head and then wanted the stratum.
    """
    held: tuple[int, str] | None = session.info.get(_HEAD)
    if held is not None:
        return held
    connection = session.connection()
    found = connection.execute(_HEAD_LOCKED).one_or_none()
    if found is None:
        raise AuditError("the audit trail has no head row: the database is damaged")
    last_seq, last_mac = int(found[0]), str(found[1])
    beyond = connection.execute(_FIRST_BEYOND, {"seq": last_seq}).scalar()
    if beyond is not None:
        # events beyond the head: without this check an insert dies on the primary key
        raise AuditError(
            f"audit trail broken after event {last_seq}: event {beyond} already "
            "exists beyond the head (events were inserted or the head was edited)"
        )
    session.info[_HEAD] = (last_seq, last_mac)
    return last_seq, last_mac


def append(
    session: Session,
    key: bytes,
    *,
    now: datetime,
    user: str,
    role: str,
    action: str,
    subject: str = "",
    reason: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event inside the caller's transaction; the head row lock serialises writers.

    The user name, subject and reason are cut to :data:`USER_MAX`,
    :data:`SUBJECT_MAX` and :data:`REASON_MAX` characters: a refusal records
    whatever name or subject was typed, of any length.
    """
    user, subject, reason = user[:USER_MAX], subject[:SUBJECT_MAX], reason[:REASON_MAX]
    session.flush()  # the covered rows written so far get their MACs, and are recorded here
    rows_text = take_written(session)
    last_seq, last_mac = lock_head(session)
    detail_map = dict(details or {})
    seq = last_seq + 1
    at = utc_text(now)
    stored = details_text(detail_map)
    body = stored_body(seq, at, user, role, action, subject, reason, stored, rows_text)
    mac = event_mac(key, last_mac, body)
    values: dict[str, Any] = {
        "seq": seq,
        "at": at,
        "user": user,
        "role": role,
        "action": action,
        "subject": subject,
        "reason": reason,
        "details": stored,
        "prev_mac": last_mac,
        "mac": mac,
    }
    if rows_text is not None:
        values["rows"] = rows_text
    # the insert names only the columns given: a refusal is recorded even in a
    # database whose schema predates the rows column (before 'db upgrade')
    connection = session.connection()
    connection.execute(_INSERT_EVENT, values)
    connection.execute(_MOVE_HEAD, {"seq": seq, "mac": mac})
    session.info[_HEAD] = (seq, mac)
    return AuditEvent(
        seq=seq,
        at=at,
        user=user,
        role=role,
        action=action,
        subject=subject,
        reason=reason,
        details=detail_map,
        mac=mac,
    )


def events(session: Session, since: int = 0, limit: int | None = None) -> list[AuditEvent]:
    """Events with ``seq > since`` in order."""
    query = select(AuditRow).where(AuditRow.seq > since).order_by(AuditRow.seq)
    if limit is not None:
        query = query.limit(limit)
    return [_to_event(row) for row in session.scalars(query)]


def _to_event(row: AuditRow) -> AuditEvent:
    try:
        details = json.loads(row.details)
    except ValueError:
        details = {"unreadable": row.details}
    return AuditEvent(
        seq=row.seq,
        at=row.at,
        user=row.user,
        role=row.role,
        action=row.action,
        subject=row.subject,
        reason=row.reason,
        details=details,
        mac=row.mac,
    )


def stored_rows(connection: Connection) -> Iterator[tuple[Any, ...]]:
    """Every stored event as the driver returns it, in sequence order, streamed.

    Columns: seq, at, user, role, action, subject, reason, details (JSON text),
    prev_mac, mac, rows (JSON text or None): what :func:`verify` checks, read through
    the driver's cursor in the caller's transaction (a server-side cursor on
    PostgreSQL), without SQLAlchemy rows: the client holds one batch of
    :data:`VERIFY_BATCH` rows at a time.
    """
    statement = select(
        AuditRow.seq,
        AuditRow.at,
        AuditRow.user,
        AuditRow.role,
        AuditRow.action,
        AuditRow.subject,
        AuditRow.reason,
        AuditRow.details,
        AuditRow.prev_mac,
        AuditRow.mac,
        AuditRow.rows,
    ).order_by(AuditRow.seq)
    named = {"name": "randomizer_audit_verify"} if connection.dialect.name == "postgresql" else {}
    cursor = connection.connection.cursor(**named)
    try:
        cursor.execute(str(statement.compile(dialect=connection.dialect)))
        while batch := cursor.fetchmany(VERIFY_BATCH):
            yield from batch
    finally:
        cursor.close()


def verify(session: Session, key: bytes, checkpoint: Checkpoint | None = None) -> ChainReport:
    """Recompute the chain; raise :class:`AuditError` naming the first broken event.

    With a (signature-checked) ``checkpoint``, also prove that the trail still
    holds that head unchanged: this catches a cut tail and a chain rewritten
    with the key.
    """
    mac_of = ChainMac(key).digest
    prev_mac = GENESIS_MAC
    prev_digest = bytes.fromhex(GENESIS_MAC)
    expected_seq = 1
    checkpoint_found = False
    for row in stored_rows(session.connection()):
        seq, at, user, role, action, subject, reason, details, stored_prev, mac, rows_text = row
        if seq != expected_seq:
            where = expected_seq if seq > expected_seq else seq
            raise AuditError(
                f"audit trail broken at event {where}: events are missing or out of order"
            )
        if stored_prev != prev_mac:
            raise AuditError(
                f"audit trail broken at event {seq}: it was altered, inserted or reordered"
            )
        body = stored_body(seq, at, user, role, action, subject, reason, details, rows_text)
        digest = mac_of(prev_digest + body)
        if digest.hex() != mac:
            # details stored in format 1 (or altered): the MAC input from the parsed details
            try:
                detail_map = json.loads(details)
            except ValueError:
                raise AuditError(
                    f"audit trail broken at event {seq}: details are not JSON"
                ) from None
            try:
                rows = None if rows_text is None else json.loads(rows_text)
            except ValueError:
                raise AuditError(f"audit trail broken at event {seq}: rows are not JSON") from None
            body = canonical(seq, at, user, role, action, subject, reason, detail_map, rows)
            digest = mac_of(prev_digest + body)
            if digest.hex() != mac:
                raise AuditError(
                    f"audit trail broken at event {seq}: it was altered, inserted or reordered"
                )
        if checkpoint is not None and seq == checkpoint.seq:
            if mac != checkpoint.head_mac:
                raise AuditError(
                    f"audit trail differs from the signed checkpoint at event "
                    f"{seq}: the trail was rewritten or cut"
                )
            checkpoint_found = True
        prev_mac, prev_digest = mac, digest
        expected_seq += 1
    head = session.execute(
        select(AuditHead.seq, AuditHead.mac).where(AuditHead.id == 1)
    ).one_or_none()
    last = expected_seq - 1
    if head is None or head.seq != last or head.mac != prev_mac:
        raise AuditError(
            f"audit trail broken after event {last}: the head does not match "
            "the last event (events were cut or the head was edited)"
        )
    if checkpoint is not None and not checkpoint_found:
        raise AuditError(
            f"audit trail ends at event {last} but the signed checkpoint names "
            f"event {checkpoint.seq}: the tail was cut"
        )
    return ChainReport(
        events=last,
        head_seq=last,
        head_mac=prev_mac,
        checkpoint_seq=checkpoint.seq if checkpoint else None,
    )


def verify_trail(op: Operation, checkpoint: Checkpoint | None = None) -> ChainReport:
    """Verify the chain in ``op``'s transaction and, given a checkpoint, that its head is there.

    The checkpoint's signature is checked by whoever read the note (with
    :func:`read_checkpoint`), so no public key has to reach the backend.
    """
    if checkpoint is not None and checkpoint.trial != op.trial.id:
        raise InvalidInput(f"the checkpoint is for trial {checkpoint.trial!r}, not {op.trial.id!r}")
    report = verify(op.session, op.vault.audit_key(), checkpoint)
    op.audit("audit.verify", details={"events": report.events, "checkpoint": report.checkpoint_seq})
    return report


def take_checkpoint(op: Operation) -> Checkpoint:
    """Verify the chain, record the checkpoint and return it unsigned.

    The caller signs it with :func:`sign_checkpoint` where the signing key
    lives, away from the database host.
    """
    verify(op.session, op.vault.audit_key())
    event = op.audit("audit.checkpoint")
    return Checkpoint(op.trial.id, event.seq, event.mac, event.at)


def head(session: Session) -> tuple[int, str]:
    """The current head: (sequence number, MAC)."""
    row = session.execute(select(AuditHead.seq, AuditHead.mac).where(AuditHead.id == 1)).one()
    return int(row.seq), str(row.mac)


def new_signing_key() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as (private PEM, public PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def _statement(checkpoint: Checkpoint) -> str:
    return (
        f"{NOTE_HEADER}\ntrial: {checkpoint.trial}\nsequence: {checkpoint.seq}\n"
        f"head: {checkpoint.head_mac}\ntime: {checkpoint.at}\n"
    )


def load_signing_key(private_pem: bytes) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``private_pem``; anything else is bad input."""
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError):
        raise InvalidInput(
            "the signing key is not an unencrypted Ed25519 private key PEM"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput("the signing key is not an Ed25519 private key")
    return key


def sign_checkpoint(checkpoint: Checkpoint, private_pem: bytes) -> str:
    """The note to file outside the database: the statement plus its Ed25519 signature."""
    key = load_signing_key(private_pem)
    statement = _statement(checkpoint)
    signature = base64.b64encode(key.sign(statement.encode("utf-8"))).decode("ascii")
    return f"{statement}signature: {signature}\n"


def read_checkpoint(note: str, public_pem: bytes) -> Checkpoint:
    """Parse a note and check its signature; a forged or altered note is refused."""
    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, TypeError):
        raise InvalidInput("the public key is not an Ed25519 public key PEM") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("the public key is not an Ed25519 public key")
    lines = note.strip("\n").split("\n")
    try:
        if len(lines) != 6 or lines[0] != NOTE_HEADER:
            raise ValueError
        fields = dict(line.split(": ", 1) for line in lines[1:])
        checkpoint = Checkpoint(
            trial=fields["trial"],
            seq=int(fields["sequence"]),
            head_mac=fields["head"],
            at=fields["time"],
        )
        signature = base64.b64decode(fields["signature"], validate=True)
    except (ValueError, KeyError):
        raise InvalidInput(
            "the checkpoint note is malformed: give the signed note exactly as "
            "the audit checkpoint wrote it",
            hint=Hint.CHECKPOINT,
        ) from None
    try:
        key.verify(signature, _statement(checkpoint).encode("utf-8"))
    except InvalidSignature:
        raise AuditError(
            "the checkpoint note's signature does not verify with this public "
            "key: the note is forged or altered"
        ) from None
    return checkpoint


def now_utc() -> datetime:
    """The current UTC time (the one clock the CLI injects)."""
    return datetime.now(UTC)
