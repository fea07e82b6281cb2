"""Row MACs: the security-relevant rows are tamper-evident without the key.

docs/architecture.md, "Integrity of rows". Every covered row carries ``row_mac``,
HMAC-SHA256 under the vault's row key (:attr:`randomizer.vault.Vault.row_key`) of
a canonical encoding of the trial, the table, the row's primary key and the
columns :data:`COVERED` declares for its table. The MAC is written in the
transaction that writes the row (ORM writes through the session hooks below, the
bulk list generation through :func:`mac_rows`) and checked whenever the row is
read through the ORM in an operation (:func:`attach`), so a row someone changed
without the key refuses the action with :class:`~randomizer.errors.IntegrityFailure`.

A MAC proves a row was written by the randomizer, not that it is the latest
version: an old row put back, or a row deleted, still passes its own check.
So each audit event that wrote covered rows also records, per table, how many
rows it added and the change in the sum of their MACs (mod 2**256: a keyed
multiset hash) and, for a few rows, their ids and new MACs. :func:`verify`
replays the trail and checks that the rows in the database are exactly those it
says were written.

Adding a column to a covered table? Name it in :data:`COVERED` if it matters
to a decision: every row's MAC then covers it (existing databases need their
MACs recomputed in the migration's upgrade, as :func:`seal_unsealed` does).
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Date,
    DateTime,
    Dialect,
    Insert,
    Integer,
    LargeBinary,
    Row,
    Select,
    String,
    Table,
    Update,
    bindparam,
    event,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import Session, UOWTransaction, attributes
from sqlalchemy.sql.expression import ClauseElement

from randomizer.errors import AuditError, Hint, IntegrityFailure
from randomizer.models import (
    AuditRecord,
    Base,
    Kit,
    Participant,
    Slot,
    Stratum,
    Trial,
    User,
    UserSite,
    UTCDateTime,
)
from randomizer.vault import Vault

LABEL = b"randomizer/v1 row\0"
"""Versioned label at the start of every encoded row."""

SINCE_REVISION = "0008"
"""The schema revision that added row MACs: rows of older databases have none yet."""


@dataclass(frozen=True)
class Covered:
    """One covered table: its model and the columns its rows' MACs cover.

    The first column is the row's identity (its primary key).
    """

    model: type[Base]
    columns: tuple[str, ...]

    @property
    def table(self) -> str:
        """The table's name."""
        return str(self.model.__tablename__)


COVERED: tuple[Covered, ...] = (
    Covered(
        Trial,
        (
            "id",
            "design_toml",
            "design_digest",
            "list_digest",
            # not list_generated_at: the tests and the demo date it back behind the service;
            # it only bounds the earliest randomization date (docs/architecture.md)
            "locked_at",
            "locked_by",
            "lock_reason",
            "list_generated_by",
            "list_state",
            "list_approved_at",
            "list_approved_by",
        ),
    ),
    Covered(User, ("id", "name", "role", "password_hash", "disabled")),
    Covered(UserSite, ("id", "user_id", "site")),
    Covered(Stratum, ("id", "key", "position", "planned", "size", "next_sequence")),
    # Sealed values (a slot's allocation, a kit's content, the seed) are not covered:
    # AES-GCM already authenticates each one and binds it to its row, and a key
    # rotation seals them again, which must leave every row MAC and the trail as is.
    Covered(Slot, ("id", "stratum_id", "sequence")),
    Covered(
        Participant,
        (
            "id",
            "code",
            "site",
            "stratum_id",
            "slot_id",
            "randomization_number",
            "randomized_on",
            "randomized_at",
            "randomized_by",
            "answers",
            "emergency_unblinded_at",
            "emergency_unblinded_by",
            "voided_at",
            "voided_by",
            "void_reason",
            "randomization_meaning",
            "void_meaning",
        ),
    ),
    Covered(
        Kit,
        (
            "id",
            "code",
            "slot_id",
            "visit",
            "spare",
            "status",
            "participant_id",
            "dispensed_at",
            "visit_date",
            "prepared_at",
            "prepared_by",
            "replaces_kit_id",
            "void_reason",
        ),
    ),
)
"""THE declaration of what is covered: one entry per table, its columns in MAC order."""

BY_TABLE: dict[str, Covered] = {c.table: c for c in COVERED}
BY_MODEL: dict[type[Base], Covered] = {c.model: c for c in COVERED}

_MODULUS = 1 << 256
_VAULT = "randomizer.rows.vault"
_UNSEALED_OK = "randomizer.rows.unsealed_ok"
_WRITTEN = "randomizer.rows.written"
_NEW = "randomizer.rows.new"
_NAMED_MAX = 100
"""At most this many rows of one table are named one by one in an event's record."""


# encoding and MACs -------------------------------------------------------------------------


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return b"s%d:%b" % (len(data), data)


def _integer(value: int) -> bytes:
    data = b"%d" % value
    return b"i%d:%b" % (len(data), data)


def _boolean(value: bool) -> bytes:
    return b"t" if value else b"f"


def _bytes(value: bytes | bytearray | memoryview) -> bytes:
    data = bytes(value)
    return b"b%d:%b" % (len(data), data)


def _time(value: datetime) -> bytes:
    if value.tzinfo is None:
        raise ValueError("row times must be timezone-aware")
    data = value.astimezone(UTC).isoformat(timespec="microseconds").encode("ascii")
    return b"T%d:%b" % (len(data), data)


def _date(value: date) -> bytes:
    data = value.isoformat().encode("ascii")
    return b"D%d:%b" % (len(data), data)


def _json(value: dict[str, Any]) -> bytes:
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )
    return b"j%d:%b" % (len(data), data)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    str: _text,
    int: _integer,
    bool: _boolean,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    datetime: _time,
    date: _date,
    dict: _json,
}


def _encoder(value: Any) -> Callable[[Any], bytes]:
    """The encoder of a value whose exact type is not in the table (an enum, a subclass)."""
    for kind in (bool, int, str, bytes, bytearray, memoryview, datetime, date, dict):
        if isinstance(value, kind):
            return _ENCODERS[kind]
    raise TypeError(f"no row encoding for {type(value).__name__}")


def _field(value: Any) -> bytes:
    """One value: a type tag, then its length in decimal, a colon and its bytes (a netstring
    with a tag); None and the booleans are a tag alone."""
    if value is None:
        return b"n"
    return (_ENCODERS.get(type(value)) or _encoder(value))(value)


def _values(values: Iterable[Any]) -> bytes:
    """The encoding of a row's covered values, in order (the bulk paths' inner loop)."""
    get = _ENCODERS.get
    return b"".join([b"n" if v is None else (get(type(v)) or _encoder(v))(v) for v in values])


def prefix(trial_id: str, table: str) -> bytes:
    """The encoding's constant start for one table of one trial."""
    return LABEL + _field(trial_id) + _field(table)


def encode(trial_id: str, table: str, values: Sequence[Any]) -> bytes:
    """The canonical bytes a row's MAC covers: label, trial, table, then each covered value."""
    return prefix(trial_id, table) + _values(values)


def mac_row(vault: Vault, table: str, values: Sequence[Any]) -> bytes:
    """The MAC of one row of ``table``; ``values`` in :data:`COVERED` order."""
    return vault.row_mac(encode(vault.trial_id, table, values))


def mac_rows(vault: Vault, table: str, rows: Iterable[Sequence[Any]]) -> list[bytes]:
    """:func:`mac_row` for many rows at once (the bulk paths: list generation, upgrade, verify)."""
    start = prefix(vault.trial_id, table)
    key = vault.row_key
    digest = hmac.digest
    return [digest(key, start + _values(row), "sha256") for row in rows]


_SLOT_COLUMNS = ("id", "stratum_id", "sequence")
_KIT_COLUMNS = ("id", "code", "slot_id", "visit", "spare", "status")


def mac_new_slots(vault: Vault, rows: Sequence[tuple[int, int, int, bytes]]) -> list[bytes]:
    """The MACs of new slots (id, stratum id, sequence; the sealed allocation given is not
    covered), as list generation writes them: :func:`mac_rows`'s result, built without
    its per-value calls."""
    if BY_TABLE["slots"].columns != _SLOT_COLUMNS:  # the declaration grew: the general path
        return mac_rows(vault, "slots", [row[:3] for row in rows])
    start = prefix(vault.trial_id, "slots")
    key = vault.row_key
    digest = hmac.digest
    strata: dict[int, bytes] = {}
    macs = []
    for slot_id, stratum_id, sequence, _sealed in rows:
        stratum = strata.get(stratum_id)
        if stratum is None:
            stratum = strata[stratum_id] = _integer(stratum_id)
        i = b"%d" % slot_id
        q = b"%d" % sequence
        data = b"%bi%d:%b%bi%d:%b" % (start, len(i), i, stratum, len(q), q)
        macs.append(digest(key, data, "sha256"))
    return macs


def mac_new_kits(
    vault: Vault, rows: Sequence[tuple[int, str, bytes, int | None, int | None]], spare: bool
) -> list[bytes]:
    """The MACs of new kits (id, code, sealed content (not covered), slot id, visit), all
    ``spare`` or not, ``available``, every other covered column empty: as list generation
    writes them."""
    columns = BY_TABLE["kits"].columns
    empty = (None,) * (len(columns) - len(_KIT_COLUMNS))
    if columns[: len(_KIT_COLUMNS)] != _KIT_COLUMNS:  # the declaration changed: in general
        return mac_rows(
            vault,
            "kits",
            [(i, c, s, v, spare, "available", *empty) for i, c, _content, s, v in rows],
        )
    start = prefix(vault.trial_id, "kits")
    tail = _values((spare, "available", *empty))
    key = vault.row_key
    digest = hmac.digest
    small: dict[int | None, bytes] = {None: b"n"}  # slot ids and visits, each used often
    macs = []
    for kit_id, code, _content, slot_id, visit in rows:
        slot = small.get(slot_id)
        if slot is None:
            slot = small[slot_id] = _integer(slot_id)  # type: ignore[arg-type]
        number = small.get(visit)
        if number is None:
            number = small[visit] = _integer(visit)  # type: ignore[arg-type]
        i = b"%d" % kit_id
        c = code.encode("utf-8")
        data = b"%bi%d:%bs%d:%b%b%b%b" % (start, len(i), i, len(c), c, slot, number, tail)
        macs.append(digest(key, data, "sha256"))
    return macs


def broken(table: str, row_id: Any) -> IntegrityFailure:
    """The refusal for a row whose MAC fails: the table and the row id, nothing of its values."""
    return IntegrityFailure(
        f"integrity check failed: {table} row {row_id} was changed without the key "
        "(its MAC does not match); nothing was done, an admin or monitor verifies the database",
        hint=Hint.VERIFY,
    )


def check_row(vault: Vault, table: str, values: Sequence[Any], mac: bytes | None) -> None:
    """Raise :class:`IntegrityFailure` unless ``mac`` is the row's MAC."""
    if mac is None or not vault.verify_row_mac(encode(vault.trial_id, table, values), mac):
        raise broken(table, values[0])


def values_of(obj: Base) -> list[Any]:
    """A mapped object's covered values, in :data:`COVERED` order."""
    return [getattr(obj, name) for name in BY_MODEL[type(obj)].columns]


# the session: checked reads, MAC'd writes, written rows recorded -------------------------


def attach(session: Session, vault: Vault, *, unsealed_ok: bool = False) -> None:
    """Check and MAC covered rows in ``session`` with ``vault`` from now on.

    ``unsealed_ok`` is for ``db upgrade`` from a schema older than row MACs only:
    rows without a MAC pass until :func:`seal_unsealed` gives them one.
    """
    session.info[_VAULT] = vault
    session.info[_UNSEALED_OK] = unsealed_ok


@contextmanager
def unchecked(session: Session) -> Iterator[None]:
    """Read without the per-row check (the caller has just checked every row itself)."""
    vault = session.info.pop(_VAULT, None)
    try:
        yield
    finally:
        if vault is not None:
            session.info[_VAULT] = vault


def check_object(session: Session, obj: Base) -> None:
    """Check one loaded object's MAC with the session's vault (if one is attached)."""
    mac = getattr(obj, "row_mac")  # noqa: B009 (every covered model has it)
    _check_read(session, BY_MODEL[type(obj)].table, values_of(obj), mac)


def _on_load(target: Base, context: Any) -> None:
    session = context.session
    if session is not None:
        check_object(session, target)


def _on_refresh(target: Base, context: Any, attrs: Iterable[str] | None) -> None:
    if attrs is None:
        _on_load(target, context)


def _old_values(obj: Base, columns: Sequence[str]) -> tuple[list[Any], bytes | None]:
    state = inspect(obj)
    old: list[Any] = []
    for name in (*columns, "row_mac"):
        history = state.attrs[name].load_history()
        before = history.deleted or history.unchanged
        old.append(before[0] if before else None)
    return old[:-1], old[-1]


def _record(
    session: Session, table: str, row_id: Any, old: bytes | None, new: bytes | None
) -> None:
    written: dict[str, dict[str, Any]] = session.info.setdefault(_WRITTEN, {})
    entry = written.setdefault(table, {"n": 0, "sum": 0, "rows": {}})
    entry["n"] += (new is not None) - (old is not None)
    entry["sum"] += int.from_bytes(new or b"", "big") - int.from_bytes(old or b"", "big")
    entry["rows"][str(row_id)] = new.hex() if new is not None else None


def record_bulk(session: Session, table: str, macs: Sequence[bytes]) -> None:
    """Record rows written in bulk (new rows, not named one by one) for the next audit event."""
    written: dict[str, dict[str, Any]] = session.info.setdefault(_WRITTEN, {})
    entry = written.setdefault(table, {"n": 0, "sum": 0, "rows": {}})
    entry["n"] += len(macs)
    entry["sum"] += sum(int.from_bytes(mac, "big") for mac in macs)
    entry["bulk"] = True


def take_written(session: Session) -> str | None:
    """The rows written since the last audit event, as the JSON the next event stores.

    Per table: ``n``, rows added less rows deleted; ``sum``, the change in the sum of
    the table's MACs mod 2**256 (64 hex digits); ``rows``, each row written by id
    and its new MAC (null: deleted), unless the event wrote more than a few or wrote
    in bulk. None when nothing was written.
    """
    written: dict[str, dict[str, Any]] | None = session.info.pop(_WRITTEN, None)
    if not written:
        return None
    record: dict[str, Any] = {}
    for table, entry in sorted(written.items()):
        item: dict[str, Any] = {"n": entry["n"], "sum": f"{entry['sum'] % _MODULUS:064x}"}
        if entry["rows"] and not entry.get("bulk") and len(entry["rows"]) <= _NAMED_MAX:
            item["rows"] = entry["rows"]
        record[table] = item
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def pending(session: Session) -> bool:
    """Whether rows were written that no audit event records yet."""
    return bool(session.info.get(_WRITTEN))


# Core reads and writes: the hot path's rows without ORM objects -------------------------

CoveredRow = Row[*tuple[Any, ...]]
"""A covered row as :func:`read_row` returns it: the covered values in order, then the MAC."""


def read_row(
    session: Session, model: type[Base], *, lock: bool = False, **equal: Any
) -> CoveredRow | None:
    """The covered row whose columns equal ``equal``: its covered values and MAC (last),
    checked as a keyed ORM load checks it; None when no row matches.

    ``lock``: ``SELECT ... FOR UPDATE`` (PostgreSQL; SQLite's write transaction holds
    the whole database already). The statement is built once per shape and run on the
    session's connection: no ORM layer, no per-call SQL construction.
    """
    spec = BY_MODEL[model]
    row = (
        session.connection()
        .execute(
            _read_statement(model, tuple(equal), lock), {f"w_{k}": v for k, v in equal.items()}
        )
        .one_or_none()
    )
    if row is not None:
        _check_read(session, spec.table, row[:-1], row[-1])
    return row


def update_row(session: Session, model: type[Base], row: CoveredRow, **changes: Any) -> None:
    """Write ``changes`` to a row :func:`read_row` returned (and checked): its new MAC in
    the same statement, recorded for the next audit event."""
    vault: Vault = session.info[_VAULT]
    spec = BY_MODEL[model]
    values = [changes.get(name, old) for name, old in zip(spec.columns, row, strict=False)]
    mac = mac_row(vault, spec.table, values)
    session.connection().execute(
        _update_statement(model, tuple(changes)), {**changes, "row_mac": mac, "w_id": row[0]}
    )
    _record(session, spec.table, row[0], row[-1], mac)


def insert_row(session: Session, model: type[Base], **values: Any) -> int:
    """Insert one covered row (its MAC over the values as stored, defaults included),
    recorded for the next audit event; returns its id."""
    vault: Vault = session.info[_VAULT]
    spec = BY_MODEL[model]
    connection = session.connection()
    stored = connection.execute(_insert_statement(model), values).one()
    mac = mac_row(vault, spec.table, stored)
    connection.execute(_update_statement(model, ()), {"row_mac": mac, "w_id": stored[0]})
    _record(session, spec.table, stored[0], None, mac)
    return int(stored[0])


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


@functools.cache
def _read_statement(model: type[Base], names: tuple[str, ...], lock: bool) -> Select[Any]:
    table = _table(model)
    spec = BY_MODEL[model]
    query = select(*(table.c[c] for c in (*spec.columns, "row_mac"))).where(
        *(table.c[name] == bindparam(f"w_{name}") for name in names)
    )
    return query.with_for_update() if lock else query


@functools.cache
def _update_statement(model: type[Base], names: tuple[str, ...]) -> Update:
    table = _table(model)
    return (
        update(table)
        .where(table.c.id == bindparam("w_id"))
        .values({name: bindparam(name) for name in (*names, "row_mac")})
    )


@functools.cache
def _insert_statement(model: type[Base]) -> Insert:
    table = _table(model)
    return insert(table).returning(*(table.c[c] for c in BY_MODEL[model].columns))


def _check_read(session: Session, table: str, values: Sequence[Any], mac: bytes | None) -> None:
    """Check a row read in a keyed session (none attached: nothing to check with)."""
    vault: Vault | None = session.info.get(_VAULT)
    if vault is None:
        return
    if mac is None and session.info.get(_UNSEALED_OK):
        return
    check_row(vault, table, values, mac)


def _before_flush(session: Session, _context: UOWTransaction, _instances: Any) -> None:
    # Without the row key (a session no operation opened) rows are written without a
    # MAC: the next keyed read of such a row refuses it, so this fails closed.
    vault: Vault | None = session.info.get(_VAULT)
    if vault is None:
        return
    for obj in session.new:
        if type(obj) in BY_MODEL:
            session.info.setdefault(_NEW, []).append(obj)
    for obj in list(session.dirty) + list(session.deleted):
        spec = BY_MODEL.get(type(obj))
        if spec is None:
            continue
        state = inspect(obj)
        deleted = obj in session.deleted
        if not deleted and not any(state.attrs[c].history.has_changes() for c in spec.columns):
            continue
        old, old_mac = _old_values(obj, spec.columns)
        if not (old_mac is None and session.info.get(_UNSEALED_OK)):
            # a row is never given a new MAC unless its stored state had a valid one
            check_row(vault, spec.table, old, old_mac)
        new_mac = None if deleted else mac_row(vault, spec.table, values_of(obj))
        if new_mac is not None:
            setattr(obj, "row_mac", new_mac)  # noqa: B010
        _record(session, spec.table, old[0], old_mac, new_mac)


def _after_flush(session: Session, _context: UOWTransaction) -> None:
    new: list[Base] = session.info.pop(_NEW, [])
    inserted = [obj for obj in new if inspect(obj).persistent]
    vault: Vault | None = session.info.get(_VAULT)
    if not inserted or vault is None:
        return
    connection = session.connection()
    for obj in inserted:
        spec = BY_MODEL[type(obj)]
        values = values_of(obj)
        mac = mac_row(vault, spec.table, values)
        model: Any = spec.model
        connection.execute(update(model).where(model.id == values[0]).values(row_mac=mac))
        attributes.set_committed_value(obj, "row_mac", mac)
        _record(session, spec.table, values[0], None, mac)


for _covered in COVERED:
    event.listen(_covered.model, "load", _on_load)
    event.listen(_covered.model, "refresh", _on_refresh)
event.listen(Session, "before_flush", _before_flush)
event.listen(Session, "after_flush_postexec", _after_flush)


# upgrade: MACs for the rows of an older database ---------------------------------------


SEAL_BATCH = 10_000


def seal_unsealed(session: Session, vault: Vault) -> dict[str, int]:
    """Give every row without a MAC its MAC (``db upgrade`` from before row MACs).

    Returns the number of rows sealed per table; they are recorded for the next
    audit event (the upgrade's), so the trail accounts for them.
    """
    sealed: dict[str, int] = {}
    for spec in COVERED:
        model: Any = spec.model
        columns = [getattr(model, name) for name in spec.columns]
        rows = session.execute(select(*columns).where(model.row_mac.is_(None))).all()
        macs = mac_rows(vault, spec.table, rows)
        for start in range(0, len(rows), SEAL_BATCH):
            session.execute(
                update(model),
                [
                    {"id": row[0], "row_mac": mac}
                    for row, mac in zip(
                        rows[start : start + SEAL_BATCH],
                        macs[start : start + SEAL_BATCH],
                        strict=True,
                    )
                ],
            )
        if macs:
            record_bulk(session, spec.table, macs)
        sealed[spec.table] = len(macs)
    session.expire_all()
    return sealed


# verify: every row, and the rows the trail says were written ------------------------------


@dataclass
class _Expected:
    n: int = 0
    total: int = 0
    rows: dict[str, str | None] = field(default_factory=dict)


def _trail_rows(session: Session) -> dict[str, _Expected]:
    """Replay the rows each audit event recorded: per table, count, MAC sum, named rows."""
    expected = {spec.table: _Expected() for spec in COVERED}
    query = (
        select(AuditRecord.seq, AuditRecord.rows)
        .where(AuditRecord.rows.is_not(None))
        .order_by(AuditRecord.seq)
        .execution_options(yield_per=SEAL_BATCH)
    )
    for seq, text in session.execute(query):
        try:
            record = json.loads(text or "{}")
            for table, item in record.items():
                entry = expected.setdefault(table, _Expected())
                entry.n += int(item["n"])
                entry.total = (entry.total + int(item["sum"], 16)) % _MODULUS
                entry.rows.update(item.get("rows", {}))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise AuditError(
                f"audit trail broken at event {seq}: its record of rows is unreadable"
            ) from None
    return expected


def _stream(
    session: Session, vault: Vault, spec: Covered, where: Any = None
) -> Generator[tuple[Any, Any, bool], None, None]:
    """Each row of ``spec``'s table (optionally ``where``, a condition without parameters)
    as (id, MAC, whether it matches), read a batch at a time in id order."""
    connection = session.connection()
    check = DriverCheck(vault, spec.table, connection.dialect)
    query = select(*check.columns).order_by(check.columns[0])
    if where is not None:
        query = query.where(where)
    # the driver's rows, not SQLAlchemy's: no row objects and no type processing per value
    # (DriverCheck encodes the driver's values); driver_batches closes its cursor (a
    # server-side one on PostgreSQL) even when the reader stops early
    with closing(driver_batches(connection, query, f"randomizer_rows_{spec.table}")) as batches:
        for batch in batches:
            yield from check.verdicts(batch)


def _column_encoder(kind: Any) -> Callable[[Any], bytes]:
    """The encoder of a column's values as its type reads them (the general one if unsure)."""
    if isinstance(kind, UTCDateTime):
        return _time
    for sql_type, encoder in (
        (Boolean, _boolean),
        (Integer, _integer),
        (String, _text),
        (LargeBinary, _bytes),
        (DateTime, _time),
        (Date, _date),
        (JSON, _json),
    ):
        if isinstance(kind, sql_type):
            return encoder
    return _field


# checks of rows as the driver returns them (the bulk reads: verify, the exports) ------------

DRIVER_BATCH = 10_000
"""Rows fetched from a driver cursor at a time."""

_JSON_MEMO = 4096
"""At most this many distinct JSON texts keep their encoding (answers repeat a lot)."""


def _driver_encoder(
    kind: Any, dialect: Dialect, memo: dict[str, bytes] | None = None
) -> Callable[[Any], bytes]:
    """The encoder of a column's non-null values as the driver returns them, before
    SQLAlchemy's result processing: the same bytes as :func:`_column_encoder` of the
    processed value. The common driver forms (SQLite's text times and dates, its 0
    and 1 for booleans; psycopg's naive UTC datetimes) are encoded directly; anything
    else goes through the column's result processor first. A JSON column's encodings
    of texts are kept in ``memo`` (at most :data:`_JSON_MEMO`: answers repeat a lot).
    """
    process = kind.dialect_impl(dialect).result_processor(dialect, None)
    typed = _column_encoder(kind)
    general: Callable[[Any], bytes] = (
        typed if process is None else (lambda value: typed(process(value)))
    )
    if isinstance(kind, UTCDateTime):

        def utc_time(value: Any) -> bytes:
            # SQLite's stored "YYYY-MM-DD HH:MM:SS.ffffff" (SQLAlchemy's one format) and a
            # naive UTC datetime are isoformat's text of the aware time less "T" / "+00:00"
            if type(value) is str and len(value) == 26 and value[10] == " ":
                return f"T32:{value[:10]}T{value[11:]}+00:00".encode("ascii")
            if type(value) is datetime and value.tzinfo is None:
                text = value.isoformat(timespec="microseconds")
                if len(text) == 26:
                    return f"T32:{text}+00:00".encode("ascii")
            return general(value)

        return utc_time
    if isinstance(kind, Boolean):
        return _boolean  # SQLite's 0 and 1 as psycopg's False and True
    if isinstance(kind, Date):

        def iso_date(value: Any) -> bytes:
            if type(value) is str and len(value) == 10:
                return f"D10:{value}".encode("ascii")  # SQLite's text, ISO 8601 already
            return general(value)

        return iso_date
    if isinstance(kind, JSON):
        texts: dict[str, bytes] = {} if memo is None else memo

        def json_value(value: Any) -> bytes:
            if type(value) is not str:
                return general(value)
            encoded = texts.get(value)
            if encoded is None:
                if len(texts) >= _JSON_MEMO:
                    texts.clear()
                encoded = texts[value] = general(value)
            return encoded

        return json_value
    if isinstance(kind, Integer | String | LargeBinary) and process is None:
        return typed
    return general


def _inline_step(position: int, index: int, kind: Any) -> str:
    """Source lines that set ``p<position>`` to the encoding of ``row[index]``: the
    common driver forms inline (integers, text; SQLite's text times and dates and its
    0/1 booleans; JSON texts seen before, from ``m<position>``), anything else (and an
    unexpected type) through ``f<position>``, the column's :func:`_driver_encoder`."""
    p, f = f"p{position}", f"f{position}"
    lines = [f"    v = row[{index}]", "    if v is None:", f'        {p} = b"n"']
    if isinstance(kind, UTCDateTime):
        lines += [
            '    elif type(v) is str and len(v) == 26 and v[10] == " ":',
            f'        {p} = ("T32:" + v[:10] + "T" + v[11:] + "+00:00").encode("ascii")',
        ]
    elif isinstance(kind, Boolean):
        lines += [
            "    elif type(v) is int or type(v) is bool:",
            f'        {p} = b"t" if v else b"f"',
        ]
    elif isinstance(kind, Integer):
        lines += [
            "    elif type(v) is int:",
            '        t = b"%d" % v',
            f'        {p} = b"i%d:%b" % (len(t), t)',
        ]
    elif isinstance(kind, String):
        lines += [
            "    elif type(v) is str:",
            '        t = v.encode("utf-8")',
            f'        {p} = b"s%d:%b" % (len(t), t)',
        ]
    elif isinstance(kind, Date):
        lines += [
            "    elif type(v) is str and len(v) == 10:",
            f'        {p} = ("D10:" + v).encode("ascii")',
        ]
    elif isinstance(kind, JSON):
        lines += [
            f"    elif type(v) is str and (t := m{position}.get(v)) is not None:",
            f"        {p} = t",
        ]
    lines += ["    else:", f"        {p} = {f}(v)"]
    return "\n".join(lines)


def _row_encoder(
    kinds: Sequence[Any], dialect: Dialect, offset: int, table: str
) -> Callable[[Sequence[Any]], bytes]:
    """One function that encodes the covered values of a driver row (at ``offset``),
    as :func:`_values` encodes the values SQLAlchemy reads.

    Generated from the column types, so that an integer or a text value costs no
    function call: with one call per value, encoding cost more than the HMAC itself.
    The source holds only column positions and these fixed templates, never a value.
    """
    namespace: dict[str, Any] = {}
    for position, kind in enumerate(kinds):
        memo: dict[str, bytes] = {}
        namespace[f"f{position}"] = _driver_encoder(kind, dialect, memo)
        namespace[f"m{position}"] = memo
    steps = "\n".join(
        _inline_step(position, offset + position, kind) for position, kind in enumerate(kinds)
    )
    parts = ", ".join(f"p{position}" for position in range(len(kinds)))
    source = f"def encode(row):\n{steps}\n    return b''.join(({parts},))\n"
    exec(compile(source, f"<row encoder of {table}>", "exec"), namespace)  # noqa: S102
    encoder: Callable[[Sequence[Any]], bytes] = namespace["encode"]
    return encoder


class DriverCheck:
    """Checks the MACs of one covered table's rows as the database driver returns them.

    A statement selects :attr:`columns` (the table's covered columns in MAC order,
    then ``row_mac``) starting at position ``offset`` of each row, maybe among other
    columns; :meth:`matches`, :meth:`check` and :meth:`check_batch` then take each
    driver row as it is. The MAC is HMAC-SHA256 (pyca/cryptography), its state after
    the table's constant prefix computed once and copied per row.
    """

    def __init__(self, vault: Vault, table: str, dialect: Dialect, offset: int = 0) -> None:
        spec = BY_TABLE[table]
        model: Any = spec.model
        self.table = table
        self.columns: list[Any] = [getattr(model, name) for name in spec.columns]
        self.columns.append(model.row_mac)
        width = len(spec.columns)
        self.encode = _row_encoder(
            [column.type for column in self.columns[:-1]], dialect, offset, table
        )
        self._id_at = offset
        self._mac_at = offset + width
        self._start = crypto_hmac.HMAC(vault.row_key, hashes.SHA256())
        self._start.update(prefix(vault.trial_id, table))

    def matches(self, row: Sequence[Any]) -> bool:
        """Whether ``row`` carries its MAC (False for a row without one)."""
        mac = row[self._mac_at]
        if mac is None:
            return False
        authenticator = self._start.copy()
        authenticator.update(self.encode(row))
        try:
            authenticator.verify(mac if type(mac) is bytes else bytes(mac))
        except InvalidSignature:
            return False
        return True

    def check(self, row: Sequence[Any]) -> None:
        """Raise :func:`broken`'s :class:`IntegrityFailure` unless :meth:`matches`."""
        if not self.matches(row):
            raise broken(self.table, row[self._id_at])

    def check_batch(self, batch: Iterable[Sequence[Any]]) -> None:
        """:meth:`check` of every row of ``batch`` (the exports' inner loop)."""
        encode = self.encode
        copy = self._start.copy
        at = self._mac_at
        for row in batch:
            mac = row[at]
            authenticator = copy()
            authenticator.update(encode(row))
            try:
                if mac is None:
                    raise InvalidSignature
                authenticator.verify(mac if type(mac) is bytes else bytes(mac))
            except InvalidSignature:
                raise broken(self.table, row[self._id_at]) from None

    def verdicts(
        self, batch: Iterable[Sequence[Any]]
    ) -> Generator[tuple[Any, bytes | None, bool], None, None]:
        """Each row of ``batch`` as (id, stored MAC, whether it matches) (verify's loop)."""
        encode = self.encode
        copy = self._start.copy
        at = self._mac_at
        key = self._id_at
        for row in batch:
            mac = row[at]
            if mac is None:
                yield row[key], None, False
                continue
            if type(mac) is not bytes:
                mac = bytes(mac)
            authenticator = copy()
            authenticator.update(encode(row))
            try:
                authenticator.verify(mac)
            except InvalidSignature:
                yield row[key], mac, False
                continue
            yield row[key], mac, True


def driver_batches(
    connection: Connection, statement: ClauseElement, name: str
) -> Generator[Sequence[Any], None, None]:
    """The rows of ``statement`` (without parameters) as the driver returns them, in
    batches of :data:`DRIVER_BATCH`, through the cursor of ``connection`` (in its
    transaction); on PostgreSQL a server-side cursor called ``name``, so that the client
    holds one batch, not every row. No SQLAlchemy rows and no type processing."""
    compiled = statement.compile(dialect=connection.dialect)
    if compiled.params:
        raise ValueError("driver_batches runs statements without parameters only")
    named = {"name": name} if connection.dialect.name == "postgresql" else {}
    cursor = connection.connection.cursor(**named)
    try:
        cursor.execute(str(compiled))
        while rows := cursor.fetchmany(DRIVER_BATCH):
            yield rows
    finally:
        cursor.close()


def check_all(session: Session, vault: Vault, table: str, where: Any = None) -> int:
    """Check every row of ``table`` (or those ``where`` selects), for a decision that reads
    them in bulk (the export); raise :class:`IntegrityFailure` at the first broken one.
    Returns the number of rows checked."""
    count = 0
    with closing(_stream(session, vault, BY_TABLE[table], where)) as stream:
        for row_id, _mac, ok in stream:
            if not ok:
                raise broken(table, row_id)
            count += 1
    return count


@dataclass(frozen=True)
class TableCheck:
    """One table's rows as :func:`verify` found them."""

    table: str
    rows: int
    broken: int


def check_tables(session: Session, vault: Vault) -> tuple[list[TableCheck], list[str]]:
    """Check every covered row's MAC and the rows against the trail; (tables, problems).

    Rows are streamed a batch at a time; each problem names a table and a row id
    (or a table alone when only the count or MAC sum tells), never a value.
    """
    expected = _trail_rows(session)
    problems: list[str] = []
    tables: list[TableCheck] = []
    for spec in COVERED:
        want = expected.get(spec.table, _Expected())
        named = dict(want.rows)
        count = 0
        total = 0
        table_problems: list[str] = []
        for row_id, mac, ok in _stream(session, vault, spec):
            count += 1
            if not ok or mac is None:
                table_problems.append(
                    f"{spec.table} row {row_id}: its MAC does not match (changed without the key)"
                )
                named.pop(str(row_id), None)
                continue
            total += int.from_bytes(mac, "big")
            if named:
                recorded = named.pop(str(row_id), "")
                if recorded is None:
                    table_problems.append(
                        f"{spec.table} row {row_id}: the audit trail records it deleted"
                    )
                elif recorded and recorded != mac.hex():
                    table_problems.append(
                        f"{spec.table} row {row_id}: not the version the audit trail "
                        "records last (an old copy of the row?)"
                    )
        for row_id, recorded in named.items():
            if recorded is not None:
                table_problems.append(
                    f"{spec.table} row {row_id}: missing (the audit trail records it written)"
                )
        if not table_problems and (count != want.n or total % _MODULUS != want.total):
            table_problems.append(
                f"{spec.table}: the rows differ from those the audit trail records "
                f"({count} in the database, {want.n} recorded)"
            )
        problems.extend(table_problems)
        tables.append(TableCheck(spec.table, count, len(table_problems)))
    return tables, problems
