"""The investigator's pages: randomize, participants, kits, emergency unblinding."""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from randomizer.allocation import service
from randomizer.backends.interface import Backend
from randomizer.design import TrialDesign
from randomizer.errors import (
    Hint,
    InvalidInput,
    RandomizerError,
)
from randomizer.server.pages.core import (
    Checked,
    FormPage,
    Signed,
    State,
    Visitor,
    acting,
    design_of,
    logged_in_again,
    pages,
    quoted,
    render,
    resumable_pattern,
    see_other,
    signature_errors,
    signature_of,
    status_of_error,
)
from randomizer.server.state import ServerState, server_state
from randomizer.server.websession import (
    csrf_key,
    form_token,
    token_matches,
)
from randomizer.signatures import meaning_of

IDEM_FIELD = "idem"
"""The randomize form's one-time token: a resubmitted confirmation shows the first result."""

_IDEM_LABEL = "randomize"


def idem_token(state: ServerState, who: Visitor, participant: str) -> str:
    """A token for one confirmation: when it was shown, to whom, for which participant."""
    nonce = secrets.token_hex(8)
    issued = int(state.clock().timestamp())
    mac = form_token(
        csrf_key(state.trial_key),
        f"{_IDEM_LABEL}|{nonce}|{issued}|{participant}",
        who.principal.session,
    )
    return f"{nonce}.{issued}.{mac}"


def idem_issued(state: ServerState, who: Visitor, participant: str, token: str) -> int | None:
    """When a confirmation token of this session for ``participant`` was shown, if it is one."""
    nonce, _, rest = token.partition(".")
    issued, _, mac = rest.partition(".")
    if not issued.isdigit():
        return None
    if not token_matches(
        csrf_key(state.trial_key),
        f"{_IDEM_LABEL}|{nonce}|{issued}|{participant}",
        who.principal.session,
        mac,
    ):
        return None
    return int(issued)


def randomize_values(design: TrialDesign, form: Mapping[str, str]) -> dict[str, Any]:
    """The randomize form's typed values split into the library's arguments."""
    levels = {
        f.name: form[f"level.{f.name}"] for f in design.factors if form.get(f"level.{f.name}")
    }
    answers = {c.id: form[f"answer.{c.id}"] for c in design.criteria if f"answer.{c.id}" in form}
    return {
        "participant": form.get("participant", ""),
        "site": form.get("site", ""),
        "levels": levels,
        "answers": answers,
        "date": form.get("date", ""),
    }


_randomize_form = FormPage("randomize.html", "Randomize a participant")
_randomize_form.resumable("/randomize", "Check what you typed and continue.")


@pages.get("/randomize")
def randomize_form(request: Request, who: Signed) -> HTMLResponse:
    """The eligibility questions of the design as a form."""
    return _randomize_form(request, who, {})


@pages.post("/randomize/confirm")
def randomize_confirm(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """The confirmation step: names the participant and the site; nothing is recorded yet."""
    who, form = posted_form
    if form.get("edit"):
        return _randomize_form(request, who, form.kept())
    errors = randomize_input_errors(design_of(state), form.values)
    if errors:
        status = status_of_error(InvalidInput(next(iter(errors.values()))))
        return _randomize_form(request, who, form.kept(), status, errors=errors)
    return _randomize_confirmation(request, state, who, form.kept())


def randomize_input_errors(design: TrialDesign, form: Mapping[str, str]) -> dict[str, str]:
    """Every malformed field of the randomize form, by field name, in the library's words.

    The library's own checks, one field at a time (the participant id, the site, each
    stratum level, each answer's format and the date), so that every mistake shows at
    once; whether the answers make the participant eligible is left to the library's
    randomize, which names every failing criterion.
    """
    checks: list[tuple[str, Callable[[], object]]] = [
        ("participant", lambda: service.check_participant_id(form.get("participant", ""))),
        ("site", lambda: service.check_site(design, form.get("site", ""))),
    ]
    for factor in design.factors:
        name = f"level.{factor.name}"
        checks.append((name, functools.partial(factor.check_level, form.get(name) or None)))
    for criterion in design.criteria:
        name = f"answer.{criterion.id}"
        checks.append((name, functools.partial(criterion.check, form.get(name))))
    checks.append(("date", lambda: _date_or_none(form.get("date", ""))))
    errors: dict[str, str] = {}
    for name, check in checks:
        try:
            check()
        except InvalidInput as exc:
            errors[name] = str(exc)
    return errors


def _randomize_confirmation(
    request: Request,
    state: ServerState,
    who: Visitor,
    values: Mapping[str, str],
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    participant = " ".join(values.get("participant", "").split()).upper()
    return _randomize_confirm_form(
        request,
        who,
        values,
        status,
        participant=participant,
        parsed=randomize_values(design_of(state), values),
        idem=idem_token(state, who, participant),
        **context,
    )


_randomize_confirm_form = FormPage(
    "randomize_confirm.html", "Confirm the randomization", {"meaning": meaning_of("randomize")}
)


@pages.post("/randomize")
def randomize(request: Request, state: State, posted_form: Checked) -> Response:
    """Randomize once; a resubmitted confirmation shows the first result."""
    who, form = posted_form
    design = design_of(state)
    values = randomize_values(design, form.values)
    participant = " ".join(form.get("participant").split()).upper()
    with acting(state, who) as backend:
        try:
            result = backend.randomize(
                values["participant"],
                values["site"],
                values["levels"],
                values["answers"],
                _date_or_none(values["date"]),
                signature=signature_of(form, "randomize"),
            )
        except RandomizerError as exc:
            earlier = _same_randomization(state, who, backend, participant, form.get(IDEM_FIELD))
            if earlier is not None:
                return see_other(f"/participants/{quoted(earlier)}?randomized=1")
            refused = signature_errors(exc)
            if refused:
                return _randomize_confirmation(
                    request,
                    state,
                    who,
                    form.kept(),
                    status_of_error(exc),
                    error=str(exc),
                    errors=refused,
                )
            errors = _ineligible_fields(design, values["answers"])
            return _randomize_form.refused(request, who, form.kept(), exc, errors=errors)
    return see_other(f"/participants/{quoted(result.participant)}?randomized=1")


def _same_randomization(
    state: ServerState, who: Visitor, backend: Backend, participant: str, token: str
) -> str | None:
    """The participant this very confirmation randomized already (a double submit), if any."""
    issued = idem_issued(state, who, participant, token)
    if issued is None:
        return None
    try:
        found = [p for p in backend.participant_view() if p.participant == participant]
    except RandomizerError:
        return None
    if not found:
        return None
    row = found[0]
    randomized_at = datetime.fromisoformat(row.randomized_at)
    if randomized_at.tzinfo is None:
        randomized_at = randomized_at.replace(tzinfo=UTC)
    if row.randomized_by != who.principal.user or randomized_at.timestamp() < issued:
        return None
    return row.participant


def _ineligible_fields(design: TrialDesign, answers: Mapping[str, str]) -> dict[str, str]:
    """Each failing criterion's own message (the library's), to show next to its question."""
    errors = {}
    for criterion in design.criteria:
        if criterion.id in answers:
            try:
                failure = criterion.failure(answers[criterion.id])
            except RandomizerError as exc:
                failure = str(exc)
            if failure is not None:
                errors[f"answer.{criterion.id}"] = failure
    return errors


def _date_or_none(text: str) -> date | None:
    """A form's optional date (YYYY-MM-DD); a bad one is the library's refusal."""
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"date {text[:20]!r} is not a date: use YYYY-MM-DD") from None


@dataclass(frozen=True)
class VisitRow:
    """One dosing visit of a participant's page: its window and its kits."""

    number: int
    name: str
    first: str
    last: str
    kits: list[service.IssuedKit]


def _participant_page(
    request: Request,
    state: ServerState,
    who: Visitor,
    participant: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    design = design_of(state)
    with acting(state, who) as backend:
        rows = backend.participant_view()
    wanted = participant.strip().upper()
    found = [p for p in rows if p.participant == wanted]
    if not found:
        return render(
            request,
            "error.html",
            who,
            404,
            title="No such participant",
            message=f"participant {participant[:40]!r} is not randomized in this trial",
        )
    row = found[0]
    randomized_on = date.fromisoformat(row.randomized_on)
    visits = []
    for visit in design.visits:
        first, last = service.window_of(visit, randomized_on)
        visits.append(
            VisitRow(
                visit.number,
                visit.name,
                first.isoformat(),
                last.isoformat(),
                [k for k in row.kits if k.visit == visit.number],
            )
        )
    done = {k.visit for k in row.kits if k.status != "voided"}
    next_visit = next((v.number for v in design.visits if v.number not in done), None)
    context.setdefault("values", {})
    context.setdefault("voided", False)
    return render(
        request,
        "participant.html",
        who,
        status,
        title=f"Participant {row.participant}",
        row=row,
        visits=visits,
        next_visit=next_visit,
        **context,
    )


@pages.get("/participants")
def participant_list(request: Request, state: State, who: Signed) -> HTMLResponse:
    """Every randomized participant: id, site, number, visits with a kit issued, kits; no arm."""
    with acting(state, who) as backend:
        rows = backend.participant_view()
    return render(request, "participants.html", who, title="Participants", rows=rows)


@pages.get("/participants/{participant}")
def participant_page(
    request: Request,
    state: State,
    who: Signed,
    participant: str,
    randomized: str = "",
    requested: str = "",
    replaced: str = "",
    voided: str = "",
) -> HTMLResponse:
    """One participant: number, visits with their windows and kits; the next kit request."""
    return _participant_page(
        request,
        state,
        who,
        participant,
        voided=bool(voided),
        randomized=bool(randomized),
        requested=requested,
        replaced=replaced,
    )


@pages.post("/participants/{participant}/kits")
def request_kit(request: Request, state: State, posted_form: Checked, participant: str) -> Response:
    """Request the kit of one visit (dated, with an override reason outside its window)."""
    who, form = posted_form
    visit_text = form.get("visit").strip()
    override = form.get("override_reason").strip() or None
    with acting(state, who) as backend:
        try:
            if not visit_text.isdigit():
                raise InvalidInput(f"visit {visit_text[:20]!r} is not a visit number")
            issue = backend.request_kit(
                participant, int(visit_text), _date_or_none(form.get("date")), override
            )
        except RandomizerError as exc:
            field_name = "override_reason" if exc.hint is Hint.OVERRIDE_WINDOW else "date"
            return _participant_page(
                request,
                state,
                who,
                participant,
                status_of_error(exc),
                error=str(exc),
                errors={field_name: str(exc)},
                values=form.kept(),
                randomized=False,
                requested="",
                replaced="",
            )
    return see_other(f"/participants/{quoted(issue.participant)}?requested={issue.visit}")


_replace_form = FormPage("replace.html", "Replace a kit")
_replace_form.resumable("/kits/replace", "Check and submit.")


@pages.get("/kits/replace")
def replace_form(request: Request, who: Signed, code: str = "") -> HTMLResponse:
    """Void a kit and get a spare of the same content: the kit code and a reason."""
    return _replace_form(request, who, {"code": code})


@pages.post("/kits/replace")
def replace_kit(request: Request, state: State, posted_form: Checked) -> Response:
    """Replace a kit; the participant's page then shows the new kit."""
    who, form = posted_form
    with acting(state, who) as backend:
        try:
            result = backend.replace_kit(form.get("code"), form.get("reason"))
        except RandomizerError as exc:
            field_name = "reason" if exc.hint is Hint.REASON else "code"
            return _replace_form.refused(request, who, form.kept(), exc, field_name)
    return see_other(f"/participants/{quoted(result.participant)}?replaced={result.visit}")


_unblind_form = FormPage("unblind.html", "Emergency unblinding")
# the confirmation is still asked: a new login brings back the first step
_unblind_form.resumable("/unblind", "Check and continue.")


@pages.get("/unblind")
def unblind_form(request: Request, who: Signed, participant: str = "") -> HTMLResponse:
    """Break the code for one participant: who and why, then a confirmation."""
    return _unblind_form(request, who, {"participant": participant})


@pages.post("/unblind/confirm")
def unblind_confirm(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """The confirmation: the participant and the reason, nothing revealed or recorded yet."""
    who, form = posted_form
    if form.get("edit"):
        return _unblind_form(request, who, form.kept())
    return _unblind_confirmation(request, who, form.kept())


_unblind_confirmation = FormPage(
    "unblind_confirm.html",
    "Confirm the emergency unblinding",
    {"meaning": meaning_of("unblind.emergency")},
)


@pages.post("/unblind")
def unblind(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """Break the code: the arm is shown once, on this response only, never cached."""
    who, form = posted_form
    with acting(state, who) as backend:
        try:
            result = backend.emergency_unblind(
                form.get("participant"),
                form.get("reason"),
                signature=signature_of(form, "unblind.emergency"),
            )
        except RandomizerError as exc:
            refused = signature_errors(exc)
            if refused:
                return _unblind_confirmation.refused(request, who, form.kept(), exc, errors=refused)
            field_name = "reason" if exc.hint is Hint.REASON else "participant"
            return _unblind_form.refused(request, who, form.kept(), exc, field_name)
    response = render(request, "unblinded.html", who, title="Unblinded", result=result)
    response.headers["Cache-Control"] = "no-store"
    return response


@resumable_pattern(r"/participants/([A-Za-z0-9-]{1,32})")
def resume_kit_request(
    request: Request, who: Visitor, kept: dict[str, str], found: re.Match[str]
) -> HTMLResponse:
    """A participant's page with the kit request typed before a new login."""
    return _participant_page(
        request,
        server_state(request),
        who,
        found.group(1),
        values=kept,
        notice=logged_in_again("Check the kit request and submit it again."),
        randomized=False,
        requested="",
        replaced="",
    )


# void a randomization made in error (admin) ----------------------------------------


def _void_form(participant: str) -> FormPage:
    """The void form of one participant, named by its id in the normal form."""
    shown = participant.strip().upper()
    return FormPage(
        "void.html",
        f"Void the randomization of {shown}",
        {"participant": shown, "meaning": meaning_of("participant.void")},
    )


@resumable_pattern(r"/participants/([A-Za-z0-9-]{1,32})/void")
def resume_void(
    request: Request, who: Visitor, kept: dict[str, str], found: re.Match[str]
) -> HTMLResponse:
    """The void form with the reason typed before a new login (to sign again)."""
    return _void_form(found.group(1))(
        request, who, kept, notice=logged_in_again("Check the reason and sign again.")
    )


@pages.get("/participants/{participant}/void")
def void_form(request: Request, who: Signed, participant: str) -> HTMLResponse:
    """Void a randomization made in error: a reason and the admin's signature."""
    return _void_form(participant)(request, who, {})


@pages.post("/participants/{participant}/void")
def void_participant(
    request: Request, state: State, posted_form: Checked, participant: str
) -> Response:
    """Mark the randomization as made in error (the library decides who may)."""
    who, form = posted_form
    with acting(state, who) as backend:
        try:
            result = backend.void_participant(
                participant, form.get("reason"), signature=signature_of(form, "participant.void")
            )
        except RandomizerError as exc:
            reason_error = {"reason": str(exc)} if exc.hint is Hint.REASON else {}
            errors = signature_errors(exc) or reason_error
            return _void_form(participant).refused(request, who, form.kept(), exc, errors=errors)
    return see_other(f"/participants/{quoted(result.participant)}?voided=1")
