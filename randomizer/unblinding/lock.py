"""Database lock, then full unblinding and export for the statistician."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, BinaryIO

from sqlalchemy import Connection, Date, DateTime, select
from sqlalchemy.sql.expression import ClauseElement

from randomizer import rows as row_macs
from randomizer.audit import utc_text
from randomizer.context import Operation
from randomizer.errors import Hint, InvalidInput, StateError
from randomizer.exportfiles import ANALYSIS_FILES, ExportFiles
from randomizer.models import Kit, Participant, Slot, Stratum, UnblindingReview
from randomizer.results import LEGACY_FILE as LEGACY_FILE
from randomizer.results import Export as Export
from randomizer.results import LockResult as LockResult
from randomizer.sealed import open_allocation_arms
from randomizer.sites import participant_in_scope
from randomizer.unblinding.analysis import (
    AnalysisFiles,
    KitFacts,
    ParticipantFacts,
    csv_text,
)

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
    "randomized_by",
    "status",
    "voided_at",
    "voided_by",
    "void_reason",
    "randomization_signature_meaning",
    "void_signature_meaning",
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
    Participant.randomized_on,
    Participant.randomized_by,
    Participant.answers,
    Participant.emergency_unblinded_by,
    Participant.voided_at,
    Participant.voided_by,
    Participant.void_reason,
    Participant.randomization_meaning,
    Participant.void_meaning,
)
"""What the export says of each participant besides the arm (needs a join on Stratum)."""

EXPORT_ORDER = (Participant.stratum_id, Participant.randomization_number)
"""The export's row order: by stratum, then randomization number."""

DUMMY_PREFIX = "dummy-"
"""Put before every arm id in a dummy export (and ``DUMMY`` before every label)."""


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


def unblind_all(op: Operation, files: ExportFiles | None = None) -> Export:
    """Every randomized participant with arm and kits, as CSV (after lock only).

    Each participant, its slot and each kit issued has its row MAC checked in the
    one pass that reads it for the export, before anything is returned: a broken
    row refuses the whole export with :class:`~randomizer.errors.IntegrityFailure`
    (the same message whatever the arms). With ``files`` the export streams into
    their temporary files (never whole in memory) and the returned :class:`Export`
    holds no content, only each file's SHA-256; the caller publishes the files once
    the operation is committed, or discards them.
    """
    if op.trial.locked_at is None:
        raise StateError(
            "the database is not locked: full unblinding comes only after an "
            "admin locks the database",
            hint=Hint.LOCK,
        )
    connection = op.session.connection()
    participants = row_macs.DriverCheck(op.vault, "participants", connection.dialect)
    slot_at = len(participants.columns) + 1  # after the participant's columns and Stratum.key
    slots = row_macs.DriverCheck(op.vault, "slots", connection.dialect, offset=slot_at)
    sequence_at = slot_at + [c.key for c in slots.columns].index("sequence")
    sealed_at = slot_at + len(slots.columns)
    statement = (
        select(*participants.columns, Stratum.key, *slots.columns, Slot.allocation_sealed)
        .join(Stratum, Stratum.id == Participant.stratum_id)
        .join(Slot, Slot.id == Participant.slot_id)
        .where(participant_in_scope(op))
        .order_by(*EXPORT_ORDER)
    )
    names = [c.key for c in participants.columns]
    stratum_at = len(participants.columns)
    # each row of PARTICIPANT_COLUMNS picked out of the wider checked row
    pick = itemgetter(
        *[
            names.index(c.key) if c.class_ is Participant else stratum_at
            for c in PARTICIPANT_COLUMNS
        ]
    )

    def with_arms() -> Iterator[tuple[Sequence[Sequence[Any]], Sequence[str]]]:
        # each batch checked, then its arms opened in one call, never all rows in memory
        for rows in row_macs.driver_batches(connection, statement, "randomizer_export"):
            participants.check_batch(rows)
            slots.check_batch(rows)
            yield (
                [pick(row) for row in rows],
                open_allocation_arms(
                    op.vault,
                    [(row[stratum_at], row[sequence_at]) for row in rows],
                    [row[sealed_at] for row in rows],
                ),
            )

    if files is None:
        data, count, contents = write_export(op, with_arms(), dummy=False)
        digest = hashlib.sha256(data).hexdigest()
        file_macs = {name: op.vault.mac(content).hex() for name, content in contents.items()}
        data_mac = op.vault.mac(data).hex()
        sha256s = {name: hashlib.sha256(content).hexdigest() for name, content in contents.items()}
    else:
        count = write_export_to(op, with_arms(), False, files.streams)
        files.close()
        digests = files.digests(op.vault.mac_chunks)
        digest, data_mac_bytes = digests.pop(LEGACY_FILE)
        data_mac = data_mac_bytes.hex()
        file_macs = {name: mac.hex() for name, (_sha, mac) in digests.items()}
        sha256s = {name: sha for name, (sha, _mac) in digests.items()}
        data, contents = b"", {}
    # The trail keeps a keyed MAC of the file, not its plain SHA-256: readers of the
    # trail know every other column, so a plain hash of a 20-row file could be matched
    # by trying all 2**20 arm combinations. The key holder can check a file against it.
    op.audit(
        "unblind.all",
        subject=op.trial.id,
        details={"participants": count, "file_mac": data_mac, "files_mac": file_macs},
    )
    return Export(
        csv=data,
        sha256=digest,
        participants=count,
        files=contents,
        file_sha256=sha256s,
        written={} if files is None else {name: str(path) for name, path in files.final.items()},
    )


def write_export(
    op: Operation, batches: Iterable[tuple[Sequence[Sequence[Any]], Sequence[str]]], dummy: bool
) -> tuple[bytes, int, dict[str, bytes]]:
    """The export's CSV bytes, row count and analysis files, built in memory:
    :func:`write_export_to` into buffers."""
    buffers = {name: io.BytesIO() for name in (LEGACY_FILE, *ANALYSIS_FILES)}
    count = write_export_to(op, batches, dummy, buffers)
    contents = {name: buffer.getvalue() for name, buffer in buffers.items()}
    return contents.pop(LEGACY_FILE), count, contents


def write_export_to(
    op: Operation,
    batches: Iterable[tuple[Sequence[Sequence[Any]], Sequence[str]]],
    dummy: bool,
    out: Mapping[str, BinaryIO],
) -> int:
    """Write the export's CSV and analysis files into ``out`` (a binary stream by file
    name: :data:`LEGACY_FILE` and :data:`ANALYSIS_FILES`); the row count.

    ``batches`` yields rows of :data:`PARTICIPANT_COLUMNS` as the driver returns
    them (:func:`driver_rows`), in :data:`EXPORT_ORDER`, with the arm id of each,
    one line per participant row. Every kit issued is read here, its row MAC
    checked in the same pass. A dummy export marks every arm id and label as dummy
    and says ``yes`` in the last column, which the real export fills with ``no``:
    both files have the same columns, so an analysis written against the dummy runs
    on the real one. The analysis files (:mod:`randomizer.unblinding.analysis`)
    have the same shape in both, too.
    """
    connection = op.session.connection()
    # the stored naive UTC time as SQLAlchemy would read it (without UTCDateTime's zone,
    # added back as the "Z" of utc_text's format)
    read_time: Callable[[Any], Any] = (
        DateTime().dialect_impl(connection.dialect).result_processor(connection.dialect, None)
        or _as_read
    )
    read_date: Callable[[Any], Any] = (
        Date().dialect_impl(connection.dialect).result_processor(connection.dialect, None)
        or _as_read
    )

    def time_text(value: Any) -> str:
        if value is None:
            return ""
        if type(value) is str and len(value) == 26 and value[10] == " ":
            # SQLite's stored text "YYYY-MM-DD HH:MM:SS.ffffff" (SQLAlchemy's one format)
            # is utc_text's without T and Z: a third of the cost of parsing it
            return f"{value[:10]}T{value[11:]}Z"
        # utc_text's format; isoformat is the same text for years 1000 to 9999
        return str(read_time(value).isoformat(timespec="microseconds")) + "Z"

    def date_text(value: Any) -> str:
        if value is None:
            return ""
        if type(value) is str and len(value) == 10:
            return value  # SQLite's stored text is already ISO 8601
        return str(read_date(value).isoformat())

    kits: defaultdict[int, list[str]] = defaultdict(list)
    kit_facts: defaultdict[int, list[KitFacts]] = defaultdict(list)
    replaced_by: dict[int, str] = {}
    kit_check = row_macs.DriverCheck(op.vault, "kits", connection.dialect)
    kit_names = [c.key for c in kit_check.columns]
    kit_fields = itemgetter(
        *[
            kit_names.index(name)
            for name in (
                "participant_id",
                "visit",
                "code",
                "status",
                "dispensed_at",
                "visit_date",
                "prepared_at",
                "prepared_by",
                "void_reason",
                "id",
                "replaces_kit_id",
            )
        ]
    )
    for batch in row_macs.driver_batches(
        connection,
        select(*kit_check.columns)
        .where(Kit.participant_id.is_not(None))
        .order_by(Kit.visit, Kit.id),
        "randomizer_export_kits",
    ):
        kit_check.check_batch(batch)
        for pid, visit, code, status, requested, dosing, prepared, by, why, kit_id, old in map(
            kit_fields, batch
        ):
            kits[pid or 0].append(
                f"{visit}:{code}(voided)" if status == "voided" else f"{visit}:{code}"
            )
            kit_facts[pid or 0].append(
                KitFacts(
                    csv_text(
                        [
                            visit,
                            code,
                            time_text(requested),
                            date_text(dosing),
                            time_text(prepared),
                            by or "",
                            status,
                            why or "",
                        ]
                    ),
                    kit_id,
                )
            )
            if old is not None:
                replaced_by[old] = code
    reasons: dict[int, str] = {}
    for batch in driver_rows(
        connection,
        select(UnblindingReview.participant_id, UnblindingReview.reason).order_by(
            UnblindingReview.id.desc()
        ),
    ):
        # the first unblinding's reason: the participant's unblinding columns are the first's
        reasons.update(dict(batch))
    # UTF-8 from the start, never a copy of the file as text
    text = io.TextIOWrapper(out[LEGACY_FILE], encoding="utf-8", newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    labels = {arm.id: arm.label for arm in op.design.arms}
    marked = {
        arm: (DUMMY_PREFIX + arm, f"DUMMY {label}") if dummy else (arm, label)
        for arm, label in labels.items()
    }
    flag = "yes" if dummy else "no"
    count = 0
    answers: dict[Any, Any] = {}  # answer texts parsed (_facts)
    analysis = AnalysisFiles(op.design, marked, dummy, kit_facts, replaced_by, reasons, out)
    for rows, arms in batches:
        facts = [_facts(row, time_text, date_text, answers) for row in rows]
        writer.writerows(
            [
                fact.participant,
                fact.site,
                fact.stratum,
                fact.randomization_number,
                *marked[arm_id],
                fact.entered_at,
                " ".join(kits[fact.row_id]),
                "yes" if fact.unblinded_at else "no",
                fact.randomized_by,
                # randomized in error: the row stays (intention to treat), marked
                "voided" if fact.voided_at else "randomized",
                fact.voided_at,
                fact.voided_by,
                fact.void_reason,
                # the signatures' printed names and times are randomized_by/at, voided_by/at
                fact.randomization_meaning,
                fact.void_meaning,
                flag,
            ]
            for fact, arm_id in zip(facts, arms, strict=True)
        )
        analysis.add(facts, arms)
        count += len(rows)
    text.flush()
    text.detach()  # the stream stays open: its owner closes it
    analysis.finish(LEGACY_FILE)
    return count


_ANSWERS_KEPT = 4096
"""At most this many distinct answer texts are kept parsed during one export."""


def _facts(
    row: Sequence[Any],
    time_text: Callable[[Any], str],
    date_text: Callable[[Any], str],
    parsed: dict[Any, Any],
) -> ParticipantFacts:
    """One driver row of :data:`PARTICIPANT_COLUMNS` as the analysis files need it."""
    pid, code, site, stratum, number, entered, unblinded_at, on, by, answers, unblinder = row[:11]
    voided_at, voided_by, void_reason, randomization_meaning, void_meaning = row[11:16]
    if isinstance(answers, str | bytes):
        # SQLite's driver gives the JSON text, psycopg the value; the same text (answers
        # repeat) is parsed once, its mapping shared (only ever read)
        known = parsed.get(answers)
        if known is None:
            if len(parsed) >= _ANSWERS_KEPT:
                parsed.clear()
            known = parsed[answers] = json.loads(answers)
        answers = known
    return ParticipantFacts(  # positional, in the field order: one per participant
        pid,
        code,
        site,
        stratum,
        number,
        date_text(on),
        time_text(entered),
        by,
        answers or {},  # stored as text -> text by randomize
        time_text(voided_at),
        voided_by or "",
        void_reason or "",
        time_text(unblinded_at),
        unblinder or "",
        randomization_meaning or "",
        void_meaning or "",
    )


def driver_rows(connection: Connection, statement: ClauseElement) -> Iterator[Sequence[Any]]:
    """The rows of ``statement`` (without parameters) as the driver returns them, in batches:
    :func:`randomizer.rows.driver_batches` with the exports' cursor name."""
    return row_macs.driver_batches(connection, statement, "randomizer_export")


def _utc(value: Any) -> str:
    # utc_text's format; isoformat is the same text for years 1000 to 9999
    return str(value.isoformat(timespec="microseconds")) + "Z"


def _as_read(value: Any) -> Any:
    """A value the driver already gives in its Python type (a datetime from psycopg)."""
    return value
