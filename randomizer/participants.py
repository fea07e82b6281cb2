"""The participant view: each participant of a site, visits done and the next visit's window.

What a site needs to plan its visits, and nothing about arms: the list is
sorted by participant id, and a user limited to sites sees only theirs
(:mod:`randomizer.sites`).
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select

from randomizer.allocation.service import IssuedKit, check_site, status_word, window_of
from randomizer.audit import utc_text
from randomizer.context import Operation
from randomizer.models import Kit, Participant
from randomizer.results import ParticipantVisits as ParticipantVisits
from randomizer.sites import participant_in_scope, require_site


def participant_view(op: Operation, site: str | None = None) -> list[ParticipantVisits]:
    """Every participant the caller may see (of ``site`` only, if given), by participant id.

    A visit is done once its kit is issued (a voided kit's replacement counts, the
    voided kit does not). A user limited to sites who asks for another site is
    refused, as randomizing there is.
    """
    if site is not None:
        check_site(op.design, site)
        require_site(op, site, "see participants")
    shown = [participant_in_scope(op)]
    if site is not None:
        shown.append(Participant.site == site)
    rows = list(op.session.scalars(select(Participant).where(*shown).order_by(Participant.code)))
    op.audit("participant.list", details={"site": site, "participants": len(rows)})
    issued: defaultdict[int, dict[int, str | None]] = defaultdict(dict)
    kits: defaultdict[int, list[IssuedKit]] = defaultdict(list)
    rows_kits = (
        select(Kit.participant_id, Kit.visit, Kit.visit_date, Kit.code, Kit.status)
        .where(Kit.participant_id.in_(select(Participant.id).where(*shown)))
        .order_by(Kit.visit, Kit.id)
    )
    for participant_id, visit, visit_date, code, status in op.session.execute(rows_kits):
        if participant_id is None or visit is None:
            continue
        day = visit_date.isoformat() if visit_date else None
        kits[participant_id].append(IssuedKit(visit, code, status_word(status), day or ""))
        if status != "voided":
            issued[participant_id][visit] = day
    view = []
    for row in rows:
        done = issued[row.id]
        upcoming = next((v for v in op.design.visits if v.number not in done), None)
        window = window_of(upcoming, row.randomized_on) if upcoming is not None else None
        last = max(done) if done else None
        view.append(
            ParticipantVisits(
                participant=row.code,
                randomization_number=row.randomization_number,
                site=row.site,
                randomized_on=row.randomized_on.isoformat(),
                randomized_at=row.randomized_at.isoformat(),
                randomized_by=row.randomized_by,
                visits_done=len(done),
                last_visit_date=done[last] if last is not None else None,
                next_visit=upcoming.number if upcoming is not None else None,
                next_visit_name=upcoming.name if upcoming is not None else None,
                window_from=window[0].isoformat() if window else None,
                window_to=window[1].isoformat() if window else None,
                kits=kits[row.id],
                emergency_unblinded=row.emergency_unblinded_at is not None,
                status="voided" if row.voided_at is not None else "randomized",
                voided_at=utc_text(row.voided_at) if row.voided_at is not None else None,
                voided_by=row.voided_by,
                void_reason=row.void_reason,
            )
        )
    return view
