"""Reports: recruitment and kit status for everyone; balance by arm only when allowed.

Blinded roles never see per-arm counts before the lock: watching them move
after each randomization would unblind everyone.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import replace

from sqlalchemy import func, select

from randomizer.access import Permission, allowed
from randomizer.context import Operation
from randomizer.errors import NotAuthorized
from randomizer.models import AuditRecord, Kit, Participant, Slot, Stratum
from randomizer.results import BlockBalance as BlockBalance
from randomizer.results import ListedAllocation as ListedAllocation
from randomizer.results import Report as Report
from randomizer.sealed import open_allocation
from randomizer.sites import kit_in_scope, participant_in_scope, scope
from randomizer.unblinding.review import reviews

BALANCE_REFUSAL = (
    "balance by arm is shown only to admins, and to statisticians after the lock: "
    "ask an admin for it"
)
"""The one refusal of balance by arm (table or chart), whatever the arms and the counts."""


def require_balance(rep: Report) -> None:
    """Refuse balance by arm (table or chart) when ``rep`` does not show arms."""
    if not rep.arms_shown:
        raise NotAuthorized(BALANCE_REFUSAL)


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
    failure_dates = screen_failure_days(op)
    failures = len(failure_dates)
    by_site_date: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for p in participants:
        by_site_date[p.site][p.randomized_on.isoformat()] += 1
    failure_days = Counter(day for day in failure_dates)
    kits_by_visit: dict[str, dict[str, int]] = {
        str(v.number): dict.fromkeys(KIT_BARS, 0) for v in op.design.visits
    }
    spares_left = 0
    for visit, status, spare, count in session.execute(
        select(Kit.visit, Kit.status, Kit.spare, func.count())
        .where(kit_in_scope(op))
        .group_by(Kit.visit, Kit.status, Kit.spare)
    ):
        if spare and visit is None:
            spares_left += count if status == "available" else 0
        elif visit is not None and status in KIT_STATUS_BARS:
            bar = kits_by_visit.setdefault(str(visit), dict.fromkeys(KIT_BARS, 0))
            bar[KIT_STATUS_BARS[status]] += count
    show_arms = allowed(op.user.role, Permission.REPORT_ARMS, op.locked)
    # reviewers (admin, monitor) see the open reviews themselves; everyone sees how many
    pending = reviews(op)
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
        open_reviews=len(pending),
        reviews=pending if allowed(op.user.role, Permission.REVIEW_UNBLINDING, op.locked) else [],
        by_site_date={
            site: dict(sorted(days.items())) for site, days in sorted(by_site_date.items())
        },
        screen_failures_by_date=dict(sorted(failure_days.items())),
        kits_by_visit=kits_by_visit,
        spares_left=spares_left,
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
    allocations: list[ListedAllocation] = []
    for p in participants:
        stratum = strata[p.stratum_id]
        slot = slots[p.slot_id]
        arm, block, size = open_allocation(
            op.vault, stratum.key, slot.sequence, slot.allocation_sealed
        )
        allocations.append(ListedAllocation(stratum.key, slot.sequence, block, arm))
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
        arm_ratio=dict(zip(op.design.arm_ids, op.design.ratio, strict=True)),
        allocations=sorted(
            allocations, key=lambda a: (strata_order(strata, a.stratum), a.sequence)
        ),
    )


def screen_failure_days(op: Operation) -> list[str]:
    """The UTC day of each screen failure recorded in the trail; for a user limited to
    sites, of those at their sites.

    The site of a screen failure is in its audit record's details (recorded since
    per-site rights exist; older ones name none and count for trial-wide users only).
    """
    query = select(AuditRecord.at, AuditRecord.details).where(
        AuditRecord.action == "screen_failure"
    )
    sites = scope(op)
    return [
        at[:10]
        for at, details in op.session.execute(query)
        if sites is None or _site_of(details) in sites
    ]


def _site_of(details: str) -> str | None:
    try:
        site = json.loads(details).get("site")
    except (ValueError, AttributeError):
        return None
    return site if isinstance(site, str) else None


KIT_BARS = ("requested", "prepared", "voided")
"""What the kit chart counts per visit (besides the spares left)."""

KIT_STATUS_BARS = {"dispensed": "requested", "prepared": "prepared", "voided": "voided"}
"""A kit's stored status -> its bar (``available`` kits are not requested yet)."""


def running_imbalance(
    allocations: list[ListedAllocation], arm_ids: tuple[str, ...], ratio: tuple[int, ...]
) -> dict[str, list[float]]:
    """Per stratum, the imbalance after each participant in list order.

    For two arms it is signed: ``count / ratio`` of the first arm minus the
    second's; for more arms it is :func:`imbalance` (the spread, never negative).
    """
    counts: dict[str, dict[str, int]] = {}
    running: dict[str, list[float]] = {}
    for allocation in allocations:
        seen = counts.setdefault(allocation.stratum, dict.fromkeys(arm_ids, 0))
        seen[allocation.arm] += 1
        if len(arm_ids) == 2:
            value = seen[arm_ids[0]] / ratio[0] - seen[arm_ids[1]] / ratio[1]
        else:
            value = imbalance(seen, ratio, arm_ids)
        running.setdefault(allocation.stratum, []).append(value)
    return running


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
