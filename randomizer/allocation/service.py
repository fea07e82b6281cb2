"""The blinded allocation path: randomize, request and replace kits, pharmacy views.

Each function runs inside one :class:`~randomizer.context.Operation` (one
transaction) and writes its audit event before it returns anything. Results
shown to blinded roles carry kit codes and randomization numbers only; the
pharmacy functions (unblinded role) are the only ones here that open a sealed
arm. Refusals never differ between arms.
"""

from __future__ import annotations

import csv
import json
import re
import secrets
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import TextIO

from sqlalchemy import bindparam, select

from randomizer import audit, rows
from randomizer.allocation.kits import parse_code
from randomizer.audit import utc_text
from randomizer.context import Operation, fault_point
from randomizer.design import TrialDesign, Visit
from randomizer.errors import Hint, Ineligible, InvalidInput, NotFound, StateError
from randomizer.models import AuditRecord, Kit, Participant, Slot, Stratum
from randomizer.results import IssuedKit as IssuedKit
from randomizer.results import KitIssue as KitIssue
from randomizer.results import KitLabel as KitLabel
from randomizer.results import KitReplacement as KitReplacement
from randomizer.results import ParticipantVoid as ParticipantVoid
from randomizer.results import PharmacyKit as PharmacyKit
from randomizer.results import Preparation as Preparation
from randomizer.results import Randomization as Randomization
from randomizer.sealed import find_participant, open_kit_content, participant_named
from randomizer.sites import kit_in_scope, participant_in_scope, require_site, scope
from randomizer.trial import require_approved_list

PARTICIPANT_ID = re.compile(r"[A-Z0-9][A-Z0-9-]{0,31}")
"""Participant ids once normalised: a letter or digit, then letters, digits and dashes;
1-32 characters, upper case (see :func:`check_participant_id`)."""

SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")


def check_participant_id(participant: str) -> str:
    """The participant id normalised (surrounding white space dropped, upper case) and checked.

    ``p-007``, `` P-007 `` and ``P-007`` name one participant, so every channel
    compares and stores ids in this one form.
    """
    normal = participant.strip()
    # ASCII first: str.upper() turns some letters into ASCII ones ("\ufb01" into "FI")
    normal = normal.upper() if normal.isascii() else ""
    if not PARTICIPANT_ID.fullmatch(normal):
        raise InvalidInput(
            f"participant id {participant[:40]!r} is not valid: use 1-32 "
            "letters, digits and dashes, starting with a letter or digit"
        )
    return normal


def check_site(design: TrialDesign, site: str) -> str:
    """``site`` as the design spells it; refused if malformed or not one of the design's."""
    if not SITE_ID.fullmatch(site):
        raise InvalidInput(
            f"site {site[:40]!r} is not valid: use 1-32 letters, digits, '.', '_', '+' or '-'"
        )
    if design.sites and site not in design.sites:
        raise InvalidInput(
            f"site {site!r} is not a site of this trial: use one of {', '.join(design.sites)}"
        )
    return site


def _refuse_if_locked(op: Operation, what: str) -> None:
    if op.locked:
        raise StateError(f"the database is locked: no more {what}")


def participant_row(op: Operation, participant: str) -> Participant:
    """The randomized participant with id ``participant`` (checked), or NotFound.

    A participant of a site the acting user is not limited to is not found either,
    with the same message (:mod:`randomizer.sites`).
    """
    return find_participant(op, check_participant_id(participant), participant_in_scope(op))


def _refuse_if_voided(op: Operation, row: Participant, what: str) -> None:
    if row.voided_at is not None:
        raise StateError(
            f"participant {row.code} ({row.randomization_number}) was randomized in error "
            f"and voided: {what}"
        )


def void_participant(op: Operation, participant: str, reason: str) -> ParticipantVoid:
    """Mark a randomization made in error (admin); the slot is NOT returned to the list.

    Intention to treat: the participant keeps its randomization number and slot, stays
    in every export with its status and reason, and gets no further kit.
    """
    participant = check_participant_id(participant)
    if not reason or not reason.strip():
        raise InvalidInput(
            "a reason is required to void a randomization: say why", hint=Hint.REASON
        )
    row = participant_row(op, participant)
    _refuse_if_locked(op, "changes to participants")
    if row.voided_at is not None:
        raise StateError(
            f"participant {row.code} is already voided (by {row.voided_by} at "
            f"{utc_text(row.voided_at)})"
        )
    row.voided_at = op.now
    row.voided_by = op.user.name
    row.void_reason = reason.strip()
    row.void_meaning = op.signature.meaning if op.signature else None
    op.audit(
        "participant.void",
        subject=row.code,
        reason=reason.strip(),
        details={
            "randomization_number": row.randomization_number,
            "before": {"status": "randomized"},
            "after": {"status": "voided"},
            "slot": "stays used",
        },
    )
    return ParticipantVoid(
        participant=row.code,
        randomization_number=row.randomization_number,
        voided_at=utc_text(op.now),
        voided_by=op.user.name,
        reason=reason.strip(),
    )


def _kit(op: Operation, code: str) -> Kit:
    canonical = parse_code(code)
    kit = op.session.scalars(
        select(Kit).where(Kit.code == canonical, kit_in_scope(op))
    ).one_or_none()
    if kit is None:
        raise NotFound(f"no kit {canonical} in this trial: check the label")
    return kit


def randomization_number(stratum_position: int, strata: int, sequence: int) -> str:
    """``R-007`` unstratified; ``R-2-007`` in stratum 2 of a stratified trial."""
    if strata == 1:
        return f"R-{sequence:03d}"
    return f"R-{stratum_position}-{sequence:03d}"


def randomize(
    op: Operation,
    participant: str,
    site: str,
    levels: dict[str, str],
    answers: dict[str, str],
    on: date,
) -> Randomization:
    """Randomize one eligible participant into the next free slot of its stratum."""
    participant = check_participant_id(participant)
    design = op.design
    check_site(design, site)
    require_site(op, site, "randomize participants")
    stratum_key = design.stratum_of(levels)
    failures = design.check_answers(answers)
    _check_not_future(op, on)
    _refuse_if_locked(op, "randomization")
    require_approved_list(op)
    _check_after_list(op, on)
    found = op.session.connection().execute(_PARTICIPANT_ID, {"code": participant}).scalar()
    existing = None if found is None else op.session.get(Participant, found)
    limited_to = scope(op)
    if existing is not None and limited_to is not None and existing.site not in limited_to:
        # another site's participant: its number and site are not this user's to see
        raise StateError(
            f"participant {participant} is already randomized at another site: "
            "participant ids are unique across the trial; check the id"
        )
    if existing is not None:
        raise StateError(
            f"participant {existing.code} is already randomized as {existing.randomization_number}"
        )
    if failures:
        screen_failure = Ineligible(
            f"participant {participant} is not eligible, no slot used: " + "; ".join(failures)
        )
        screen_failure.audit_details = {"site": site}  # reports count screen failures per site
        raise screen_failure
    # Core statements, no ORM objects: this is every randomization's path (rows.read_row
    # checks each row's MAC as an ORM load would; update_row and insert_row write theirs).
    # The counter row lock serialises randomizations per stratum: FOR UPDATE on
    # PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the database.
    session = op.session
    stratum = rows.read_row(session, Stratum, lock=True, key=stratum_key)
    if stratum is None:
        raise _list_damaged(f"stratum {stratum_key} is missing")
    sequence = stratum.next_sequence
    if sequence > stratum.size:
        raise StateError(
            f"stratum {stratum_key} is full: all {stratum.size} slots are used; "
            "no participant can be randomized into it"
        )
    slot = rows.read_row(session, Slot, stratum_id=stratum.id, sequence=sequence)
    if slot is None:
        raise _list_damaged(f"slot {sequence} of stratum {stratum_key} is missing")
    rows.update_row(session, Stratum, stratum, next_sequence=sequence + 1)
    number = randomization_number(stratum.position, len(design.strata()), sequence)
    participant_id = rows.insert_row(
        session,
        Participant,
        code=participant,
        site=site,
        stratum_id=stratum.id,
        slot_id=slot.id,
        randomization_number=number,
        randomized_on=on,
        randomized_at=op.now,
        randomized_by=op.user.name,
        answers=dict(sorted(answers.items())),
        randomization_meaning=op.signature.meaning if op.signature else None,
    )
    fault_point("randomize:slot-taken")
    kit = rows.read_row(session, Kit, slot_id=slot.id, visit=1, spare=False)
    if kit is None or kit.status != "available":
        raise _list_damaged()
    rows.update_row(
        session,
        Kit,
        kit,
        status="dispensed",
        participant_id=participant_id,
        dispensed_at=op.now,
        visit_date=on,
    )
    op.audit(
        "randomize",
        subject=participant,
        details={
            "randomization_number": number,
            "site": site,
            "stratum": stratum_key,
            "date": on.isoformat(),
            "kit": kit.code,
            "visit": 1,
        },
    )
    return Randomization(
        participant=participant, randomization_number=number, site=site, visit=1, kit=kit.code
    )


_PARTICIPANT_ID = select(Participant.id).where(participant_named(bindparam("code"))).limit(1)


def _check_after_list(op: Operation, on: date) -> None:
    generated = op.trial.list_generated_at
    if generated is None:
        return
    # The list's day in the local calendar; a site up to 12 hours behind UTC (UTC-12) may
    # still be on the day before: never refuse it (as _check_not_future allows UTC+14).
    day = generated.astimezone().date()
    if on < min(day, (generated.astimezone(UTC) - timedelta(hours=12)).date()):
        raise InvalidInput(
            f"date {on.isoformat()} is before the allocation list was generated "
            f"({day.isoformat()}): no participant can be randomized before it"
        )


def _check_not_future(op: Operation, on: date) -> None:
    # Local "today" may run up to 14 hours ahead of UTC (UTC+14): never refuse it.
    if on > max(op.today, (op.now + timedelta(hours=14)).date()):
        raise InvalidInput(f"date {on.isoformat()} is in the future")


def _dosing_kit(op: Operation, slot_id: int, visit: int) -> Kit:
    kit = op.session.scalars(
        select(Kit).where(Kit.slot_id == slot_id, Kit.visit == visit, Kit.spare.is_(False))
    ).one_or_none()
    if kit is None or kit.status != "available":
        raise _list_damaged()
    return kit


def _list_damaged(what: str = "the slot's kit is missing or already used") -> StateError:
    return StateError(
        f"the kit list is damaged: {what}; ask the admin to verify the allocation list",
        hint=Hint.VERIFY_LIST,
    )


def _dispense(op: Operation, kit: Kit, participant: Participant, on: date) -> None:
    kit.status = "dispensed"
    kit.participant_id = participant.id
    kit.dispensed_at = op.now
    kit.visit_date = on


def _current_kit(op: Operation, participant: Participant, visit: int) -> Kit | None:
    """The participant's live (not voided) kit of a visit, if one was issued."""
    return op.session.scalars(
        select(Kit).where(
            Kit.participant_id == participant.id, Kit.visit == visit, Kit.status != "voided"
        )
    ).one_or_none()


def window_of(visit: Visit, randomized_on: date) -> tuple[date, date]:
    """The first and last allowed date of a visit."""
    target = randomized_on + timedelta(days=visit.day)
    return target - timedelta(days=visit.window), target + timedelta(days=visit.window)


def request_kit(
    op: Operation, participant: str, visit_number: int, on: date | None, override_reason: str | None
) -> KitIssue:
    """The kit of a dosing visit, dated ``on`` (None: today); visits in order.

    A repeat request returns the kit already issued and keeps its recorded date;
    if it gave another date, the result's ``note`` says that date was not recorded.
    """
    design = op.design
    visit = design.visit(visit_number)
    if on is not None:
        _check_not_future(op, on)
    row = participant_row(op, participant)
    participant = row.code
    _refuse_if_voided(op, row, "no kit is issued to them")
    if on is not None and on < row.randomized_on:
        raise InvalidInput(
            f"date {on.isoformat()} is before {participant} was randomized "
            f"({row.randomized_on.isoformat()}): no visit comes before "
            "randomization"
        )
    existing = _current_kit(op, row, visit_number)
    if existing is not None:
        details: dict[str, object] = {"visit": visit_number, "kit": existing.code, "repeat": True}
        note = ""
        if on is not None and on != existing.visit_date:
            recorded = existing.visit_date.isoformat() if existing.visit_date else "undated"
            note = (
                f"visit {visit_number}'s kit was issued earlier, dated {recorded}: the date "
                f"{on.isoformat()} was not recorded; the kit and its recorded date are "
                "unchanged"
            )
            details["date_not_recorded"] = on.isoformat()
        op.audit("kit.request", subject=participant, details=details)
        return _issue(row, visit, existing, repeat=True, note=note)
    on = on or op.today
    _refuse_if_locked(op, "dispensing")
    previous = _current_kit(op, row, visit_number - 1) if visit_number > 1 else None
    if visit_number > 1 and previous is None:
        raise StateError(
            f"visit {visit_number} comes after visit {visit_number - 1}, whose "
            f"kit has not been requested for {participant}: request visits in order"
        )
    if previous is not None and previous.visit_date is not None and on <= previous.visit_date:
        raise InvalidInput(
            f"date {on.isoformat()} is not after visit {visit_number - 1} "
            f"({previous.visit_date.isoformat()})"
        )
    first, last = window_of(visit, row.randomized_on)
    details = {"visit": visit_number, "date": on.isoformat()}
    if not first <= on <= last:
        if override_reason is None:
            raise StateError(
                f"{on.isoformat()} is outside the window of visit {visit_number} "
                f"({visit.name}) for {participant}: {first.isoformat()} to "
                f"{last.isoformat()}; to dose outside the window, give an "
                "override reason",
                hint=Hint.OVERRIDE_WINDOW,
            )
        details["window_override"] = {"from": first.isoformat(), "to": last.isoformat()}
    kit = _dosing_kit(op, row.slot_id, visit_number)
    _dispense(op, kit, row, on)
    details["kit"] = kit.code
    op.audit("kit.request", subject=participant, reason=override_reason or "", details=details)
    return _issue(row, visit, kit, repeat=False)


def _issue(row: Participant, visit: Visit, kit: Kit, repeat: bool, note: str = "") -> KitIssue:
    return KitIssue(
        participant=row.code,
        randomization_number=row.randomization_number,
        visit=visit.number,
        visit_name=visit.name,
        kit=kit.code,
        visit_date=kit.visit_date.isoformat() if kit.visit_date else "",
        repeat=repeat,
        note=note,
    )


def replace_kit(op: Operation, code: str, reason: str) -> KitReplacement:
    """Void an issued kit and issue a spare of the same content in its place."""
    old = _kit(op, code)
    _refuse_if_locked(op, "dispensing")
    if old.status == "voided":
        raise StateError(f"kit {old.code} is already voided")
    if old.participant_id is None or old.visit is None:
        raise StateError(
            f"kit {old.code} has not been issued to a participant: only issued kits can be replaced"
        )
    owner = op.session.get(Participant, old.participant_id)
    assert owner is not None
    _refuse_if_voided(op, owner, "no kit is issued to them")
    content = open_kit_content(op.vault, old.code, old.content_sealed)
    candidates: list[Kit] = []
    stock: Counter[str] = Counter()
    issued = 0
    for candidate in op.session.scalars(select(Kit).where(Kit.spare.is_(True)).order_by(Kit.id)):
        arm = open_kit_content(op.vault, candidate.code, candidate.content_sealed)
        stock[arm] += 1
        if candidate.status != "available":
            issued += 1
        elif arm == content:
            candidates.append(candidate)
    # Spares run out when any arm could have run out, whichever arms were replaced:
    # refusing only when this kit's own arm has none left would tell a blinded
    # investigator which kits share an arm.
    if not candidates or issued >= min(stock[arm] for arm in op.design.arm_ids):
        raise StateError(
            f"no spare kit left to replace {old.code}: the trial's spare kits are "
            "used up, and spares cannot be added to a generated list; contact "
            "the list custodian"
        )
    # Any available spare of the arm, chosen by the OS CSPRNG: taking the lowest id
    # would tell whoever reads the kits table (no key needed) that every available
    # spare below the chosen one holds the other arm.
    spare = secrets.choice(candidates)
    participant = op.session.get(Participant, old.participant_id)
    assert participant is not None
    old.status = "voided"
    old.void_reason = reason
    fault_point("kit.replace:voided")
    spare.slot_id = old.slot_id
    spare.visit = old.visit
    spare.replaces_kit_id = old.id
    _dispense(op, spare, participant, old.visit_date or op.today)
    op.audit(
        "kit.replace",
        subject=old.code,
        reason=reason,
        details={"new_kit": spare.code, "participant": participant.code, "visit": old.visit},
    )
    return KitReplacement(
        voided=old.code, kit=spare.code, participant=participant.code, visit=old.visit
    )


def prepare_kit(op: Operation, code: str) -> Preparation:
    """Show the pharmacist what a kit holds and record its preparation (once)."""
    kit = _kit(op, code)
    _refuse_if_locked(op, "dispensing")
    if kit.status == "voided":
        raise StateError(
            f"kit {kit.code} is VOIDED ({kit.void_reason or 'no reason'}): do NOT "
            "prepare it; ask the investigator for the replacement kit code"
        )
    if kit.status == "prepared":
        when = kit.prepared_at.date().isoformat() if kit.prepared_at else "earlier"
        raise StateError(
            f"kit {kit.code} was already prepared on {when} by "
            f"{kit.prepared_by}: a kit is prepared once"
        )
    if kit.participant_id is None or kit.visit is None:
        raise StateError(
            f"kit {kit.code} has not been issued to a participant: prepare only "
            "kits an investigator has requested"
        )
    participant = op.session.get(Participant, kit.participant_id)
    assert participant is not None
    _refuse_if_voided(op, participant, f"do NOT prepare kit {kit.code}")
    # written before the event, so that the event records the row it changed
    kit.status = "prepared"
    kit.prepared_at = op.now
    kit.prepared_by = op.user.name
    op.audit(
        "pharmacy.prepare",
        subject=kit.code,
        details={"participant": participant.code, "visit": kit.visit},
    )
    arm = op.design.arm(open_kit_content(op.vault, kit.code, kit.content_sealed))
    visit = op.design.visit(kit.visit)
    return Preparation(
        kit=kit.code,
        arm=arm.id,
        label=arm.label,
        description=arm.description,
        instructions=arm.preparation,
        participant=participant.code,
        randomization_number=participant.randomization_number,
        visit=visit.number,
        visit_name=visit.name,
        prepared_at=op.now.isoformat(),
    )


def pharmacy_list(op: Operation) -> list[PharmacyKit]:
    """Every kit with its content, status and history, sorted by code (pharmacist).

    Who requested a kit comes from the audit trail (the randomization, kit
    request or replacement that issued it); when and by whom it was prepared,
    why it was voided and which kit replaced it, from the kit rows.
    """
    op.audit("pharmacy.list")
    participants = {p.id: p for p in op.session.scalars(select(Participant))}
    requested_by = _requesters(op)
    kits = list(op.session.scalars(select(Kit).where(kit_in_scope(op)).order_by(Kit.code)))
    replaced_by = {kit.replaces_kit_id: kit.code for kit in kits if kit.replaces_kit_id}
    return [
        _pharmacy_kit(
            op,
            kit,
            participants.get(kit.participant_id or -1),
            requested_by.get(kit.code, ""),
            replaced_by.get(kit.id, ""),
        )
        for kit in kits
    ]


def pharmacy_queue(op: Operation) -> list[PharmacyKit]:
    """The kits requested and not yet prepared, oldest request first (pharmacist).

    Only those kits are read (by their status), with their participants and who
    requested each (:func:`_requester`, through the trail's subject index), so the
    queue costs what it holds, not the trial's size. Audited as the pharmacy list is.
    A requested kit has not been replaced (a replaced kit is voided).
    """
    op.audit("pharmacy.list")
    kits = list(
        op.session.scalars(
            select(Kit)
            .where(kit_in_scope(op), Kit.status == "dispensed")
            .order_by(Kit.dispensed_at, Kit.code)
        )
    )
    issued = {kit.participant_id for kit in kits if kit.participant_id is not None}
    participants = {
        p.id: p for p in op.session.scalars(select(Participant).where(Participant.id.in_(issued)))
    }
    queue = []
    for kit in kits:
        participant = participants.get(kit.participant_id or -1)
        queue.append(_pharmacy_kit(op, kit, participant, _requester(op, kit, participant), ""))
    return queue


def lookup_kit(op: Operation, code: str) -> PharmacyKit:
    """One kit of :func:`pharmacy_list`, found by its typed or scanned code (pharmacist).

    The code is read forgivingly (:func:`~randomizer.allocation.kits.parse_code`: a
    wrong check character says it is probably a typo). The kit is one indexed read by
    its code; its participant, the kit that replaced it and the trail's events that
    issued it are read for this kit alone, so a lookup costs the same at any trial size.
    Audited exactly as the pharmacy list is: a ``pharmacy.list`` event with no subject.
    (Naming the kit would show it to readers limited to other sites, for whom an event
    with no participant is trial-level: :func:`randomizer.sites.visible_events`.)
    """
    try:
        kit = _kit(op, code)
    except NotFound as exc:
        # No refusal event, as when the page looked the code up in the whole list: its
        # message names the code, which readers limited to other sites must not see.
        exc.audited = False
        raise
    participant = None
    if kit.participant_id is not None:
        participant = op.session.get(Participant, kit.participant_id)
    op.audit("pharmacy.list")
    return _pharmacy_kit(
        op, kit, participant, _requester(op, kit, participant), _replacement(op, kit)
    )


def _pharmacy_kit(
    op: Operation, kit: Kit, participant: Participant | None, requested_by: str, replaced_by: str
) -> PharmacyKit:
    """A kit row of the pharmacy list: its content opened, its status and history."""
    arm = op.design.arm(open_kit_content(op.vault, kit.code, kit.content_sealed))
    return PharmacyKit(
        kit=kit.code,
        arm=arm.id,
        label=arm.label,
        status=status_word(kit.status),
        spare=kit.spare,
        participant=participant.code if participant else "",
        visit=kit.visit,
        randomization_number=participant.randomization_number if participant else "",
        visit_date=kit.visit_date.isoformat() if kit.visit_date else "",
        requested_at=_utc_text(kit.dispensed_at),
        requested_by=requested_by,
        prepared_at=_utc_text(kit.prepared_at),
        prepared_by=kit.prepared_by or "",
        void_reason=kit.void_reason or "",
        replaced_by=replaced_by,
    )


def _replacement(op: Operation, kit: Kit) -> str:
    """The code of the spare issued in place of ``kit``, if any.

    A spare is issued to the voided kit's participant, so the participant's index
    finds it among that participant's few kits.
    """
    if kit.participant_id is None:
        return ""
    spare = op.session.scalars(
        select(Kit)
        .where(Kit.participant_id == kit.participant_id, Kit.replaces_kit_id == kit.id)
        .order_by(Kit.id)
        .limit(1)
    ).one_or_none()
    return spare.code if spare is not None else ""


def _utc_text(moment: datetime | None) -> str:
    return audit.utc_text(moment) if moment is not None else ""


ISSUING_ACTIONS = ("randomize", "kit.request", "kit.replace")
"""The trail's actions that issue a kit: its ``kit`` (or ``new_kit``) detail names it."""


def _issued_kit(details: str) -> str | None:
    """The kit an issuing event's details name (a replacement's new kit first), if any."""
    try:
        data = json.loads(details)
    except ValueError:
        return None
    code = data.get("new_kit") or data.get("kit")
    return code if isinstance(code, str) else None


def _requesters(op: Operation) -> dict[str, str]:
    """Who issued each kit, from the trail: the first randomize, kit request or replacement."""
    who: dict[str, str] = {}
    records = op.session.execute(
        select(AuditRecord.user, AuditRecord.details)
        .where(AuditRecord.action.in_(ISSUING_ACTIONS))
        .order_by(AuditRecord.seq)
    )
    for user, details in records:
        code = _issued_kit(details)
        if code is not None:
            who.setdefault(code, user)
    return who


def _requester(op: Operation, kit: Kit, participant: Participant | None) -> str:
    """Who issued ``kit``, as :func:`_requesters` tells it, from this kit's events alone.

    The events that can issue it have as subject its participant (randomize, kit
    request) or the kit it replaced (kit replace); the subject's index finds them.
    """
    if participant is None:
        return ""
    subjects = [participant.code]
    if kit.replaces_kit_id is not None:
        replaced = op.session.get(Kit, kit.replaces_kit_id)
        if replaced is not None:
            subjects.append(replaced.code)
    records = op.session.execute(
        select(AuditRecord.user, AuditRecord.details)
        .where(AuditRecord.subject.in_(subjects), AuditRecord.action.in_(ISSUING_ACTIONS))
        .order_by(AuditRecord.seq)
    )
    for user, details in records:
        if _issued_kit(details) == kit.code:
            return str(user)
    return ""


KIT_CSV_COLUMNS = (
    "kit",
    "arm",
    "label",
    "status",
    "spare",
    "participant",
    "visit",
    "randomization_number",
    "visit_date",
    "requested_at",
    "requested_by",
    "prepared_at",
    "prepared_by",
    "void_reason",
    "replaced_by",
)
"""The columns of ``pharmacy list --csv`` and of the pharmacy page's download."""


def kit_csv_row(k: PharmacyKit) -> list[object]:
    """One kit as a row of :data:`KIT_CSV_COLUMNS`."""
    return [
        k.kit,
        k.arm,
        k.label,
        k.status,
        "yes" if k.spare else "no",
        k.participant,
        k.visit or "",
        k.randomization_number,
        k.visit_date,
        k.requested_at,
        k.requested_by,
        k.prepared_at,
        k.prepared_by,
        k.void_reason,
        k.replaced_by,
    ]


def write_kits_csv(handle: TextIO, kits: list[PharmacyKit]) -> None:
    """The pharmacy list as CSV (:data:`KIT_CSV_COLUMNS`), for the CLI and the pages."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(KIT_CSV_COLUMNS)
    for k in kits:
        writer.writerow(kit_csv_row(k))


KIT_STATUS_WORDS = {"available": "available", "dispensed": "requested"}
"""What each stored kit status says to a reader: a kit an investigator has
requested is stored as ``dispensed`` but was not handed out yet; ``prepared``
and ``voided`` say what happened as they are."""


def status_word(stored: str) -> str:
    """A kit's status as shown: requested, prepared, voided (or available)."""
    return KIT_STATUS_WORDS.get(stored, stored)


def kit_label(op: Operation, code: str) -> KitLabel:
    """The label of a prepared kit (pharmacist); a kit not prepared yet gets none."""
    kit = _kit(op, code)
    if kit.status != "prepared" or kit.participant_id is None or kit.visit is None:
        raise StateError(
            f"kit {kit.code} is {status_word(kit.status)}, not prepared: a label is "
            "printed for a prepared kit only; prepare it first"
        )
    participant = op.session.get(Participant, kit.participant_id)
    assert participant is not None
    visit = op.design.visit(kit.visit)
    op.audit("pharmacy.label", subject=kit.code, details={"participant": participant.code})
    return KitLabel(
        trial=op.trial.id,
        kit=kit.code,
        participant=participant.code,
        randomization_number=participant.randomization_number,
        visit=visit.number,
        visit_name=visit.name,
    )
