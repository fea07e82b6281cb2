"""Database lock, then full unblinding and export for the statistician."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select

from randomizer.audit import utc_text
from randomizer.context import Operation
from randomizer.errors import InvalidInput, StateError
from randomizer.models import Kit, Participant, Slot, Stratum
from randomizer.trial import open_allocation

EXPORT_COLUMNS = ("participant", "site", "stratum", "randomization_number", "arm",
                  "arm_label", "randomized_at", "kits", "emergency_unblinded")


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
    """The full unblinding as CSV bytes and their SHA-256."""

    csv: bytes
    sha256: str
    participants: int


def lock(op: Operation, reason: str) -> LockResult:
    """Lock the database: no randomization or dispensing from now on."""
    if not reason.strip():
        raise InvalidInput("a reason is required to lock the database: give --reason TEXT")
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
        raise StateError("the database is not locked: full unblinding comes only after "
                         "'randomizer lock'")
    strata = {s.id: s for s in op.session.scalars(select(Stratum))}
    slots = {s.id: s for s in op.session.scalars(select(Slot).where(
        Slot.id.in_(select(Participant.slot_id))))}
    kits: dict[int, list[Kit]] = defaultdict(list)
    for kit in op.session.scalars(select(Kit).where(Kit.participant_id.is_not(None))
                                  .order_by(Kit.visit, Kit.id)):
        assert kit.participant_id is not None
        kits[kit.participant_id].append(kit)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    participants = op.session.scalars(select(Participant).order_by(
        Participant.stratum_id, Participant.randomization_number)).all()
    for row in participants:
        stratum = strata[row.stratum_id]
        slot = slots[row.slot_id]
        arm_id, _block, _size = open_allocation(op.vault, stratum.key, slot.sequence,
                                                slot.allocation_sealed)
        arm = op.design.arm(arm_id)
        kit_list = " ".join(f"{k.visit}:{k.code}" + ("(voided)" if k.status == "voided" else "")
                            for k in kits[row.id])
        writer.writerow([row.code, row.site, stratum.key, row.randomization_number, arm.id,
                         arm.label, utc_text(row.randomized_at), kit_list,
                         "yes" if row.emergency_unblinded_at else "no"])
    data = buffer.getvalue().encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    # The trail keeps a keyed MAC of the file, not its plain SHA-256: readers of the
    # trail know every other column, so a plain hash of a 20-row file could be matched
    # by trying all 2**20 arm combinations. The key holder can check a file against it.
    op.audit("unblind.all", subject=op.trial.id,
             details={"participants": len(participants), "file_mac": op.vault.mac(data).hex()})
    return Export(csv=data, sha256=digest, participants=len(participants))
