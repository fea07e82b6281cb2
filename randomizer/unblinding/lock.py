"""Database lock, then full unblinding and export for the statistician."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from randomizer.audit import utc_text
from randomizer.context import Operation
from randomizer.errors import Hint, InvalidInput, StateError
from randomizer.models import Kit, Participant, Slot, Stratum
from randomizer.sealed import open_allocation

EXPORT_COLUMNS = ("participant", "site", "stratum", "randomization_number", "arm",
                  "arm_label", "randomized_at", "kits", "emergency_unblinded", "dummy")
"""The export's header. Real and dummy exports have the same columns; ``dummy`` says which."""

PARTICIPANT_COLUMNS = (Participant.id, Participant.code, Participant.site, Stratum.key,
                       Participant.randomization_number, Participant.randomized_at,
                       Participant.emergency_unblinded_at)
"""What the export says of each participant besides the arm (needs a join on Stratum)."""

EXPORT_ORDER = (Participant.stratum_id, Participant.randomization_number)
"""The export's row order: by stratum, then randomization number."""

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
        raise InvalidInput("a reason is required to lock the database: say why",
                           hint=Hint.REASON)
    if op.trial.locked_at is not None:
        raise StateError(f"the database is already locked (since {utc_text(op.trial.locked_at)} "
                         f"by {op.trial.locked_by})")
    count = len(op.session.scalars(select(Participant.id)).all())
    op.trial.locked_at = op.now
    op.trial.locked_by = op.user.name
    op.trial.lock_reason = reason.strip()
    op.audit("lock", subject=op.trial.id, reason=reason.strip(),
             details={"participants": count})
    return LockResult(trial=op.trial.id, locked_at=utc_text(op.now), locked_by=op.user.name,
                      reason=reason.strip(), participants=count)


def unblind_all(op: Operation) -> Export:
    """Every randomized participant with arm and kits, as CSV (after lock only)."""
    if op.trial.locked_at is None:
        raise StateError("the database is not locked: full unblinding comes only after an "
                         "admin locks the database", hint=Hint.LOCK)
    # Plain rows (no ORM objects): the export of 100,000 participants is one query.
    rows = op.session.execute(
        select(*PARTICIPANT_COLUMNS, Slot.sequence, Slot.allocation_sealed)
        .join(Stratum, Stratum.id == Participant.stratum_id)
        .join(Slot, Slot.id == Participant.slot_id)
        .order_by(*EXPORT_ORDER)).all()
    arms = [open_allocation(op.vault, row.key, row.sequence, row.allocation_sealed)[0]
            for row in rows]
    data = write_export(op, [row[:len(PARTICIPANT_COLUMNS)] for row in rows], arms,
                        dummy=False)
    digest = hashlib.sha256(data).hexdigest()
    # The trail keeps a keyed MAC of the file, not its plain SHA-256: readers of the
    # trail know every other column, so a plain hash of a 20-row file could be matched
    # by trying all 2**20 arm combinations. The key holder can check a file against it.
    op.audit("unblind.all", subject=op.trial.id,
             details={"participants": len(rows), "file_mac": op.vault.mac(data).hex()})
    return Export(csv=data, sha256=digest, participants=len(rows))


def write_export(op: Operation, rows: Sequence[Sequence[Any]], arms: Sequence[str],
                 dummy: bool) -> bytes:
    """The export's CSV bytes: one line per participant row with its arm id (design's).

    ``rows`` hold :data:`PARTICIPANT_COLUMNS` in :data:`EXPORT_ORDER`. A dummy
    export marks every arm id and label as dummy and says ``yes`` in the last
    column, which the real export fills with ``no``: both files have the same
    columns, so an analysis written against the dummy runs on the real one.
    """
    kits: defaultdict[int, list[str]] = defaultdict(list)
    for participant_id, visit, code, status in op.session.execute(
            select(Kit.participant_id, Kit.visit, Kit.code, Kit.status)
            .where(Kit.participant_id.is_not(None)).order_by(Kit.visit, Kit.id)):
        kits[participant_id or 0].append(f"{visit}:{code}" + ("(voided)" if status == "voided"
                                                         else ""))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    labels = {arm.id: arm.label for arm in op.design.arms}
    for (pid, code, site, stratum, number, randomized_at, unblinded), arm_id in zip(
            rows, arms, strict=True):
        label = labels[arm_id]
        if dummy:
            arm_id, label = DUMMY_PREFIX + arm_id, f"DUMMY {label}"
        writer.writerow([code, site, stratum, number, arm_id, label,
                         utc_text(randomized_at), " ".join(kits[pid]),
                         "yes" if unblinded else "no", "yes" if dummy else "no"])
    return buffer.getvalue().encode("utf-8")
