"""Database lock, then full unblinding and export for the statistician."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, DateTime, select
from sqlalchemy.sql.expression import ClauseElement

from randomizer import rows as row_macs
from randomizer.audit import utc_text
from randomizer.context import Operation
from randomizer.errors import Hint, InvalidInput, StateError
from randomizer.models import Kit, Participant, Slot, Stratum
from randomizer.sealed import open_allocation_arms

EXPORT_COLUMNS = (
    "participant",
    "site",
    "stratum",
    "randomization_number",
    "arm",
    "arm_label",
    "randomized_at",
    "kits",
    "emergency_unblinded",
    "dummy",
)
"""The export's header. Real and dummy exports have the same columns; ``dummy`` says which."""

PARTICIPANT_COLUMNS = (
    Participant.id,
    Participant.code,
    Participant.site,
    Stratum.key,
    Participant.randomization_number,
    Participant.randomized_at,
    Participant.emergency_unblinded_at,
)
"""What the export says of each participant besides the arm (needs a join on Stratum)."""

EXPORT_ORDER = (Participant.stratum_id, Participant.randomization_number)
"""The export's row order: by stratum, then randomization number."""

_EXPORT_BATCH = 10_000  # participants read, opened and written at a time

DUMMY_PREFIX = "dummy-"
"""Put before every arm id in a dummy export (and ``DUMMY`` before every label)."""


@dataclass(frozen=True)
class LockResult:
    """When and why the database was locked."""

    trial: str
    locked_at: str
    locked_by: str
    reason: str
    participants: int


@dataclass(frozen=True)
class Export:
    """The full unblinding (or its dummy) as CSV bytes and their SHA-256."""

    csv: bytes
    sha256: str
    participants: int


def lock(op: Operation, reason: str) -> LockResult:
    """Lock the database: no randomization or dispensing from now on."""
    if not reason.strip():
        raise InvalidInput("a reason is required to lock the database: say why", hint=Hint.REASON)
    if op.trial.locked_at is not None:
        raise StateError(
            f"the database is already locked (since {utc_text(op.trial.locked_at)} "
            f"by {op.trial.locked_by})"
        )
    count = len(op.session.scalars(select(Participant.id)).all())
    op.trial.locked_at = op.now
    op.trial.locked_by = op.user.name
    op.trial.lock_reason = reason.strip()
    op.audit("lock", subject=op.trial.id, reason=reason.strip(), details={"participants": count})
    return LockResult(
        trial=op.trial.id,
        locked_at=utc_text(op.now),
        locked_by=op.user.name,
        reason=reason.strip(),
        participants=count,
    )


def unblind_all(op: Operation) -> Export:
    """Every randomized participant with arm and kits, as CSV (after lock only)."""
    if op.trial.locked_at is None:
        raise StateError(
            "the database is not locked: full unblinding comes only after an "
            "admin locks the database",
            hint=Hint.LOCK,
        )
    # the export decides on every participant, its slot and its kits: check them all first
    row_macs.check_all(op.session, op.vault, "participants")
    row_macs.check_all(op.session, op.vault, "slots", Slot.id.in_(select(Participant.slot_id)))
    row_macs.check_all(op.session, op.vault, "kits", Kit.participant_id.is_not(None))
    connection = op.session.connection()
    statement = (
        select(*PARTICIPANT_COLUMNS, Slot.sequence, Slot.allocation_sealed)
        .join(Stratum, Stratum.id == Participant.stratum_id)
        .join(Slot, Slot.id == Participant.slot_id)
        .order_by(*EXPORT_ORDER)
    )
    width = len(PARTICIPANT_COLUMNS)

    def with_arms() -> Iterator[tuple[Sequence[Sequence[Any]], Sequence[str]]]:
        # each batch's arms opened in one call, never all rows in memory at once
        for rows in driver_rows(connection, statement):
            yield (
                [row[:width] for row in rows],
                open_allocation_arms(
                    op.vault,
                    [(row[3], row[width]) for row in rows],
                    [row[width + 1] for row in rows],
                ),
            )

    data, count = write_export(op, with_arms(), dummy=False)
    digest = hashlib.sha256(data).hexdigest()
    # The trail keeps a keyed MAC of the file, not its plain SHA-256: readers of the
    # trail know every other column, so a plain hash of a 20-row file could be matched
    # by trying all 2**20 arm combinations. The key holder can check a file against it.
    op.audit(
        "unblind.all",
        subject=op.trial.id,
        details={"participants": count, "file_mac": op.vault.mac(data).hex()},
    )
    return Export(csv=data, sha256=digest, participants=count)


def write_export(
    op: Operation, batches: Iterable[tuple[Sequence[Sequence[Any]], Sequence[str]]], dummy: bool
) -> tuple[bytes, int]:
    """The export's CSV bytes and row count: one line per participant row with its arm id.

    ``batches`` yields rows of :data:`PARTICIPANT_COLUMNS` as the driver returns
    them (:func:`driver_rows`), in :data:`EXPORT_ORDER`, with the arm id of each.
    A dummy export marks every arm id and label as dummy and says ``yes`` in the
    last column, which the real export fills with ``no``: both files have the
    same columns, so an analysis written against the dummy runs on the real one.
    """
    connection = op.session.connection()
    kits: defaultdict[int, list[str]] = defaultdict(list)
    for batch in driver_rows(
        connection,
        select(Kit.participant_id, Kit.visit, Kit.code, Kit.status)
        .where(Kit.participant_id.is_not(None))
        .order_by(Kit.visit, Kit.id),
    ):
        for participant_id, visit, code, status in batch:
            kits[participant_id or 0].append(
                f"{visit}:{code}(voided)" if status == "voided" else f"{visit}:{code}"
            )
    # the stored naive UTC time as SQLAlchemy would read it (without UTCDateTime's zone,
    # added back as the "Z" of utc_text's format)
    read_time: Callable[[Any], Any] = (
        DateTime().dialect_impl(connection.dialect).result_processor(connection.dialect, None)
        or _as_read
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    labels = {arm.id: arm.label for arm in op.design.arms}
    marked = {
        arm: (DUMMY_PREFIX + arm, f"DUMMY {label}") if dummy else (arm, label)
        for arm, label in labels.items()
    }
    flag = "yes" if dummy else "no"
    count = 0
    for rows, arms in batches:
        writer.writerows(
            [
                code,
                site,
                stratum,
                number,
                *marked[arm_id],
                # utc_text's format; isoformat is the same text for years 1000 to 9999
                read_time(randomized_at).isoformat(timespec="microseconds") + "Z",
                " ".join(kits[pid]),
                "yes" if unblinded else "no",
                flag,
            ]
            for (pid, code, site, stratum, number, randomized_at, unblinded), arm_id in zip(
                rows, arms, strict=True
            )
        )
        count += len(rows)
    return buffer.getvalue().encode("utf-8"), count


def driver_rows(connection: Connection, statement: ClauseElement) -> Iterator[Sequence[Any]]:
    """The rows of ``statement`` (without parameters) as the driver returns them, in batches.

    No SQLAlchemy rows and no type processing: the caller converts the values it needs.
    The driver's cursor is the session's connection's, in its transaction; on PostgreSQL
    a server-side (named) cursor, so that the client holds one batch, not every row.
    """
    compiled = statement.compile(dialect=connection.dialect)
    if compiled.params:
        raise ValueError("driver_rows runs statements without parameters only")
    named = {"name": "randomizer_export"} if connection.dialect.name == "postgresql" else {}
    cursor = connection.connection.cursor(**named)
    try:
        cursor.execute(str(compiled))
        while rows := cursor.fetchmany(_EXPORT_BATCH):
            yield rows
    finally:
        cursor.close()


def _as_read(value: Any) -> Any:
    """A value the driver already gives in its Python type (a datetime from psycopg)."""
    return value
