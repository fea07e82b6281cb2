"""Reports: recruitment and kit status for everyone; balance by arm only when allowed.

Blinded roles never see per-arm counts before the lock: watching them move
after each randomization would unblind everyone.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

from sqlalchemy import func, select

from randomizer.access import Permission, allowed
from randomizer.context import Operation
from randomizer.models import AuditRecord, Kit, Participant, Slot, Stratum
from randomizer.sealed import open_allocation
from randomizer.sites import kit_in_scope, participant_in_scope, scope


@dataclass(frozen=True)
class BlockBalance:
    """Arms assigned so far within one block of one stratum."""

    stratum: str
    block: int
    block_size: int
    assigned: dict[str, int]


@dataclass(frozen=True)
class Report:
    """Trial status. ``by_arm`` and ``by_block`` are empty for blinded roles before lock."""

    trial: str
    locked: bool
    planned: int
    randomized: int
    screen_failures: int
    emergency_unblindings: int
    by_site: dict[str, int]
    by_date: dict[str, int]
    kits: dict[str, int]
    arms_shown: bool
    by_arm: dict[str, dict[str, int]] = field(default_factory=dict)
    by_block: list[BlockBalance] = field(default_factory=list)
    imbalance: float | None = None
    imbalance_bound: float | None = None


def report(op: Operation) -> Report:
    """The report the caller's role may see now, of the participants of the caller's sites."""
    session = op.session
    participants = session.scalars(select(Participant).where(participant_in_scope(op))).all()
    by_site = Counter(p.site for p in participants)
    by_date = Counter(p.randomized_on.isoformat() for p in participants)
    kits = Counter(
        {
            status: count
            for status, count in session.execute(
                select(Kit.status, func.count()).where(kit_in_scope(op)).group_by(Kit.status)
            )
        }
    )
    failures = screen_failures(op)
    show_arms = allowed(op.user.role, Permission.REPORT_ARMS, op.locked)
    result = Report(
        trial=op.trial.id,
        locked=op.locked,
        planned=op.design.planned_participants,
        randomized=len(participants),
        screen_failures=failures,
        emergency_unblindings=sum(1 for p in participants if p.emergency_unblinded_at),
        by_site=dict(sorted(by_site.items())),
        by_date=dict(sorted(by_date.items())),
        kits={
            status: kits.get(status, 0)
            for status in ("available", "dispensed", "prepared", "voided")
        },
        arms_shown=show_arms,
    )
    if not show_arms:
        op.audit("report", details={"arms_shown": False})
        return result
    op.audit("report", details={"arms_shown": True})
    strata = {s.id: s for s in session.scalars(select(Stratum).order_by(Stratum.position))}
    by_arm: dict[str, dict[str, int]] = {
        s.key: dict.fromkeys(op.design.arm_ids, 0) for s in strata.values()
    }
    blocks: dict[tuple[str, int], tuple[int, Counter[str]]] = {}
    slots = {
        s.id: s
        for s in session.scalars(select(Slot).where(Slot.id.in_(select(Participant.slot_id))))
    }
    for p in participants:
        stratum = strata[p.stratum_id]
        slot = slots[p.slot_id]
        arm, block, size = open_allocation(
            op.vault, stratum.key, slot.sequence, slot.allocation_sealed
        )
        by_arm[stratum.key][arm] += 1
        blocks.setdefault((stratum.key, block), (size, Counter()))[1][arm] += 1
    by_block = [
        BlockBalance(
            stratum=key,
            block=block,
            block_size=size,
            assigned={a: counts.get(a, 0) for a in op.design.arm_ids},
        )
        for (key, block), (size, counts) in sorted(
            blocks.items(), key=lambda item: (strata_order(strata, item[0][0]), item[0][1])
        )
    ]
    totals: defaultdict[str, int] = defaultdict(int)
    for counts in by_arm.values():
        for arm, n in counts.items():
            totals[arm] += n
    by_arm["total"] = dict(totals)
    return replace(
        result,
        by_arm=by_arm,
        by_block=by_block,
        imbalance=imbalance(by_arm["total"], op.design.ratio, op.design.arm_ids),
        imbalance_bound=op.design.imbalance_bound(),
    )


def screen_failures(op: Operation) -> int:
    """Screen failures recorded in the trail; for a user limited to sites, those at their sites.

    The site of a screen failure is in its audit record's details (recorded since
    per-site rights exist; older ones name none and count for trial-wide users only).
    """
    query = select(AuditRecord.details).where(AuditRecord.action == "screen_failure")
    sites = scope(op)
    if sites is None:
        return op.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return sum(1 for details in op.session.scalars(query) if _site_of(details) in sites)


def _site_of(details: str) -> str | None:
    try:
        site = json.loads(details).get("site")
    except (ValueError, AttributeError):
        return None
    return site if isinstance(site, str) else None


def strata_order(strata: dict[int, Stratum], key: str) -> int:
    """Design position of a stratum key."""
    return next(s.position for s in strata.values() if s.key == key)


def imbalance(counts: dict[str, int], ratio: tuple[int, ...], arm_ids: tuple[str, ...]) -> float:
    """Spread of ``count / ratio`` across arms: ``|a - b|`` for a 1:1 trial.

    Permuted blocks keep it at most ``largest block size / sum(ratio)``
    (:meth:`~randomizer.design.TrialDesign.imbalance_bound`).
    """
    scaled = [counts.get(a, 0) / r for a, r in zip(arm_ids, ratio, strict=True)]
    return max(scaled) - min(scaled)
