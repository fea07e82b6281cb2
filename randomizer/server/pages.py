"""The web pages: server-rendered HTML forms that post and redirect, one page per task.

Every page acts through the same :class:`~randomizer.backends.interface.Backend`
calls as the JSON API (``LocalBackend.serving`` per request) and has no rule
of its own: each refusal shown is the library's message. Pages need no
JavaScript, carry no inline script or style (the Content-Security-Policy
forbids both) and are never cached. Sessions and CSRF are in
:mod:`randomizer.server.websession`; the audit records these requests with
the channel ``web``.

A request whose login has ended, or whose form token is stale, goes back to
the login page; a form's typed values (never a password) ride along in that
login form and come back in the form once the user has logged in again, to be
checked and submitted again.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode

import segno
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from randomizer import audit, charts, logins
from randomizer.access import Role
from randomizer.allocation import service
from randomizer.allocation.kits import parse_code
from randomizer.backends.interface import Backend
from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials, Principal
from randomizer.design import TrialDesign, parse_design
from randomizer.errors import (
    AuthenticationFailed,
    Hint,
    InvalidInput,
    NotFound,
    RandomizerError,
    StateError,
    TooManyAttempts,
)
from randomizer.reports import BALANCE_REFUSAL
from randomizer.server.state import ServerState, client_address, server_state
from randomizer.server.websession import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    CsrfPair,
    clear_cookie,
    csrf_cookie_of,
    csrf_key,
    form_token,
    set_cookie,
    token_matches,
)
from randomizer.sessions import INVALID_TOKEN

HERE = Path(__file__).parent
STATIC = HERE / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""Every response's policy: nothing inline, nothing from elsewhere, never framed."""

KEPT_PREFIX = "keep."
"""Prefix of the hidden fields of the login form that carry a form's typed values."""

NEVER_KEPT = frozenset({CSRF_FIELD, "password", "new_password", "idem", "page"})
"""Fields never carried through a new login: secrets and one-time tokens."""

MAX_FIELDS = 200
"""The most fields a posted form may have."""

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
"""The page templates; every value is HTML-escaped."""
templates.globals["status_word"] = service.status_word


@dataclass(frozen=True)
class Task:
    """A link of a role's first page and navigation."""

    path: str
    title: str
    text: str


TASKS: Mapping[str, tuple[Task, ...]] = {
    "investigator": (
        Task("/randomize", "Randomize", "Check a participant's eligibility and randomize them."),
        Task(
            "/participants",
            "Participants",
            "Your trial's participants, their visits and kits; request a visit's kit.",
        ),
        Task("/kits/replace", "Replace a kit", "Void a damaged or lost kit and get a spare."),
        Task(
            "/unblind",
            "Emergency unblinding",
            "Break the code for one participant when their care needs it.",
        ),
    ),
    "pharmacist": (
        Task("/pharmacy", "Kits to prepare", "Kits requested and not yet prepared, oldest first."),
        Task("/pharmacy/lookup", "Look up a kit", "Type or scan a kit code; prepare the kit."),
        Task("/pharmacy/kits", "Kit list", "Every kit with its content and history; CSV."),
    ),
    "monitor": (
        Task("/report", "Report", "Recruitment and kit status."),
        Task("/audit", "Audit trail", "Every recorded event, with filters."),
        Task("/verify", "Verify", "Check the audit trail's integrity, optionally a checkpoint."),
    ),
    "statistician": (
        Task("/report", "Report", "Recruitment and kit status; balance by arm after lock."),
        Task("/unblinding", "Final unblinding", "After lock: the unblinding export (audited)."),
        Task("/list/verify", "Verify the list", "After lock: regenerate the list and compare."),
    ),
    "admin": (
        Task("/users", "Users", "Add, disable and reset the password of users."),
        Task("/list", "Allocation list", "The list's status; generate it."),
        Task("/lock", "Lock", "Lock the database at the end of the trial."),
        Task("/audit", "Audit trail", "Every recorded event, with filters."),
        Task("/verify", "Verify", "Check the audit trail's integrity, optionally a checkpoint."),
        Task("/unblind", "Emergency unblinding", "Break the code for one participant."),
    ),
}
"""What each role can do, in the order its first page lists it."""


class LoginNeeded(Exception):
    """The request has no usable login or a stale form token: back to the login page."""

    def __init__(self, message: str, kept: Mapping[str, str] | None = None, page: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.kept = dict(kept or {})
        self.page = page


class BadForm(Exception):
    """A posted body that is not a readable form."""


@dataclass(frozen=True)
class Visitor:
    """A logged-in user of the pages: the principal, the role, the CSRF cookie."""

    principal: Principal
    role: str
    csrf: CsrfPair


@dataclass
class Form:
    """A posted form's fields (first value of each name)."""

    values: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        """One field, or ``default``."""
        return self.values.get(name, default)

    def kept(self) -> dict[str, str]:
        """The fields worth keeping through a new login (no secret, no one-time token)."""
        return {k: v for k, v in self.values.items() if k not in NEVER_KEPT}


State = Annotated[ServerState, Depends(server_state)]


async def posted(request: Request) -> Form:
    """The request's urlencoded form; anything else is refused as unreadable."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if kind != "application/x-www-form-urlencoded":
        raise BadForm("the page sent no form: reload the page and try again")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise BadForm("the form could not be read: reload the page and try again") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if "\0" in name or "\0" in value:
            raise BadForm("the form holds a NUL character: remove it and try again")
        values.setdefault(name, value)
    return Form(values)


Posted = Annotated[Form, Depends(posted)]


def visitor(request: Request, state: State) -> Visitor:
    """The logged-in user of the session cookie; any other request goes back to log in."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        raise LoginNeeded("log in to continue")
    try:
        principal = logins.principal_for(
            state.store, token, state.clock(), client=client_address(request, state)
        )
    except AuthenticationFailed:
        raise LoginNeeded(INVALID_TOKEN) from None
    if principal.channel != "web":
        raise LoginNeeded(INVALID_TOKEN)
    role = logins.user_role(state.store, principal.user)
    return Visitor(principal, role, csrf_cookie_of(request))


Signed = Annotated[Visitor, Depends(visitor)]


def checked(request: Request, state: State, form: Posted) -> tuple[Visitor, Form]:
    """The visitor of a state-changing form whose CSRF token is this session's."""
    try:
        who = visitor(request, state)
    except LoginNeeded as exc:
        raise LoginNeeded(exc.message, form.kept(), form.get("page")) from None
    if who.csrf.new or not token_matches(
        csrf_key(state.trial_key), who.csrf.cookie, who.principal.session, form.get(CSRF_FIELD)
    ):
        raise LoginNeeded(
            "this form was too old to accept (or came from another login): log in again "
            "and submit it again",
            form.kept(),
            form.get("page"),
        )
    return who, form


Checked = Annotated[tuple[Visitor, Form], Depends(checked)]


@contextmanager
def acting(state: ServerState, who: Visitor) -> Iterator[Backend]:
    """A backend acting as the visitor for one request, as the API's."""
    serving = LocalBackend.serving(state.store, state.trial_key, who.principal, state.clock)
    try:
        yield serving
    finally:
        serving.close()


_designs: dict[int, TrialDesign] = {}


def design_of(state: ServerState) -> TrialDesign:
    """The trial's design (public), parsed once per server."""
    key = id(state)
    if key not in _designs:
        _designs[key] = parse_design(logins.design_toml(state.store))
    return _designs[key]


def render(
    request: Request,
    name: str,
    who: Visitor | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page from its template, never cached, with this session's CSRF token."""
    state = server_state(request)
    csrf = who.csrf if who is not None else csrf_cookie_of(request)
    session_id = who.principal.session if who is not None else ""
    values: dict[str, Any] = {
        "who": who,
        "tasks": TASKS.get(who.role, ()) if who is not None else (),
        "csrf_field": CSRF_FIELD,
        "csrf_token": form_token(csrf_key(state.trial_key), csrf.cookie, session_id),
        "trial": design_of(state),
        "path": request.url.path,
        "error": "",
        "errors": {},
        "notice": "",
        "values": {},
    }
    values.update(context)
    html = templates.get_template(name).render(values)
    response = HTMLResponse(html, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    if csrf.new:
        set_cookie(response, CSRF_COOKIE, csrf.cookie)
    return response


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """An error as a page: the message only, never a stack trace."""
    try:
        return render(request, "error.html", None, status, message=message, title="Error")
    except Exception:  # the boundary of the boundary: a page that cannot even render
        return HTMLResponse(
            "<!doctype html><html lang=en><title>Error</title><main><h1>Error</h1>"
            "<p>The page could not be shown; nothing was committed.</p></main></html>",
            status_code=status,
            headers={"Cache-Control": "no-store"},
        )


def see_other(path: str) -> RedirectResponse:
    """Post/redirect/get: a 303 to a page of this app."""
    return RedirectResponse(path, status_code=303)


def status_of_error(exc: RandomizerError) -> int:
    """The HTTP status of a library refusal, as the API answers it."""
    from randomizer.server.app import status_of

    return status_of(exc)


def safe_next(path: str) -> str:
    """A path of this app to go to after login; anything else goes to the first page."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    if path.startswith(("/login", "/logout", "/static", "/api")):
        return "/"
    return path if path.isprintable() else "/"


Resume = Callable[[Request, Visitor, dict[str, str]], HTMLResponse]
RESUMABLE: dict[str, Resume] = {}
"""Forms whose typed values may come back after a new login, by their page's path."""


def resumable(path: str) -> Callable[[Resume], Resume]:
    """Register a form page's renderer for :data:`RESUMABLE`."""

    def register(function: Resume) -> Resume:
        RESUMABLE[path] = function
        return function

    return register


def login_needed(request: Request, exc: LoginNeeded) -> Response:
    """Back to the login page: a redirect for a page, the login form keeping a post's values."""
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return see_other(f"/login?next={_quote(safe_next(target))}")
    page = exc.page if exc.page in RESUMABLE else ""
    kept = exc.kept if page else {}
    response = render(
        request,
        "login.html",
        None,
        401,
        title="Log in",
        error=exc.message,
        next=page or "/",
        kept=kept,
        page=page,
        user="",
    )
    clear_cookie(response, SESSION_COOKIE)
    return response


def _quote(path: str) -> str:
    return quote(path, safe="/")


pages = APIRouter(include_in_schema=False)
"""The page routes (outside the API and its OpenAPI document)."""


# login, logout, first page ---------------------------------------------------


@pages.get("/login")
def login_form(request: Request, next: str = "/", done: str = "") -> HTMLResponse:
    """The login form."""
    notice = "You are logged out." if done == "logout" else ""
    return render(
        request,
        "login.html",
        None,
        title="Log in",
        next=safe_next(next),
        kept={},
        page="",
        user="",
        notice=notice,
    )


@pages.post("/login")
def login(request: Request, state: State, form: Posted) -> Response:
    """Check the password (throttled as the API's logins) and start a web session."""
    csrf = csrf_cookie_of(request)
    user = form.get("user")
    kept = {
        k[len(KEPT_PREFIX) :]: v
        for k, v in form.values.items()
        if k.startswith(KEPT_PREFIX) and k[len(KEPT_PREFIX) :] not in NEVER_KEPT
    }
    page = form.get("page") if form.get("page") in RESUMABLE else ""
    again: dict[str, Any] = {
        "next": safe_next(form.get("next", "/")),
        "kept": kept if page else {},
        "page": page,
    }
    if csrf.new or not token_matches(
        csrf_key(state.trial_key), csrf.cookie, "", form.get(CSRF_FIELD)
    ):
        return render(
            request,
            "login.html",
            None,
            400,
            title="Log in",
            error="the login form was too old to accept: log in again",
            user=user,
            **again,
        )
    try:
        issued = logins.login(
            state.store,
            state.key_source,
            Credentials(user, form.get("password")),
            state.clock(),
            kind="web",
            client=client_address(request, state),
            idle=state.token_idle,
            absolute=state.token_absolute,
        )
    except RandomizerError as exc:
        refusal = render(
            request,
            "login.html",
            None,
            status_of_error(exc),
            title="Log in",
            error=str(exc),
            errors={"user": str(exc)},
            user=user,
            **again,
        )
        if isinstance(exc, TooManyAttempts):
            refusal.headers["Retry-After"] = str(max(1, exc.retry_after))
        return refusal
    # the session's own principal, as every later request will see it
    principal = logins.principal_for(state.store, issued.token, state.clock())
    fresh = CsrfPair(secrets.token_urlsafe(32), True)
    response: Response
    if page:
        who = Visitor(principal, logins.user_role(state.store, principal.user), fresh)
        response = RESUMABLE[page](request, who, kept)
    else:
        response = see_other(again["next"])
        set_cookie(response, CSRF_COOKIE, fresh.cookie)
    set_cookie(response, SESSION_COOKIE, issued.token)
    return response


@pages.post("/logout")
def logout(request: Request, state: State, posted_form: Checked) -> Response:
    """End the web session (revoked in the database) and clear the cookies."""
    who, _ = posted_form
    logins.logout(state.store, state.key_source, who.principal, state.clock())
    response = see_other("/login?done=logout")
    clear_cookie(response, SESSION_COOKIE)
    clear_cookie(response, CSRF_COOKIE)
    return response


@pages.get("/")
def home(request: Request, who: Signed) -> HTMLResponse:
    """The role's first page: what this role can do."""
    return render(request, "home.html", who, title="Home")


def is_page(request: Request) -> bool:
    """Whether a request is for the pages (anything outside the JSON API)."""
    return not request.url.path.startswith("/api/")


# the investigator ----------------------------------------------------------------

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


def _randomize_form(
    request: Request, who: Visitor, values: Mapping[str, str], status: int = 200, **context: Any
) -> HTMLResponse:
    return render(
        request,
        "randomize.html",
        who,
        status,
        title="Randomize a participant",
        values=dict(values),
        **context,
    )


@resumable("/randomize")
def resume_randomize(request: Request, who: Visitor, kept: dict[str, str]) -> HTMLResponse:
    """The randomize form with what was typed before a new login."""
    return _randomize_form(
        request,
        who,
        kept,
        notice="You are logged in again. Check what you typed and continue.",
    )


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
    participant = " ".join(form.get("participant").split()).upper()
    design = design_of(state)
    return render(
        request,
        "randomize_confirm.html",
        who,
        title="Confirm the randomization",
        values=form.kept(),
        participant=participant,
        parsed=randomize_values(design, form.values),
        idem=idem_token(state, who, participant),
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
            )
        except RandomizerError as exc:
            earlier = _same_randomization(state, who, backend, participant, form.get(IDEM_FIELD))
            if earlier is not None:
                return see_other(f"/participants/{_quote(earlier)}?randomized=1")
            errors = _ineligible_fields(design, values["answers"])
            return _randomize_form(
                request, who, form.kept(), status_of_error(exc), error=str(exc), errors=errors
            )
    return see_other(f"/participants/{_quote(result.participant)}?randomized=1")


def _same_randomization(
    state: ServerState, who: Visitor, backend: Backend, participant: str, token: str
) -> str | None:
    """The participant this very confirmation randomized already (a double submit), if any."""
    issued = idem_issued(state, who, participant, token)
    if issued is None:
        return None
    try:
        found = [p for p in backend.participants() if p.participant == participant]
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
        rows = backend.participants()
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
    """Every randomized participant: id, site, number, visits done, kits; never an arm."""
    with acting(state, who) as backend:
        rows = backend.participants()
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
) -> HTMLResponse:
    """One participant: number, visits with their windows and kits; the next kit request."""
    return _participant_page(
        request,
        state,
        who,
        participant,
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
    return see_other(f"/participants/{_quote(issue.participant)}?requested={issue.visit}")


def _replace_form(
    request: Request, who: Visitor, values: Mapping[str, str], status: int = 200, **context: Any
) -> HTMLResponse:
    return render(
        request, "replace.html", who, status, title="Replace a kit", values=dict(values), **context
    )


@resumable("/kits/replace")
def resume_replace(request: Request, who: Visitor, kept: dict[str, str]) -> HTMLResponse:
    """The kit replacement form with what was typed before a new login."""
    return _replace_form(request, who, kept, notice="You are logged in again. Check and submit.")


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
            return _replace_form(
                request,
                who,
                form.kept(),
                status_of_error(exc),
                error=str(exc),
                errors={field_name: str(exc)},
            )
    return see_other(f"/participants/{_quote(result.participant)}?replaced={result.visit}")


def _unblind_form(
    request: Request, who: Visitor, values: Mapping[str, str], status: int = 200, **context: Any
) -> HTMLResponse:
    return render(
        request,
        "unblind.html",
        who,
        status,
        title="Emergency unblinding",
        values=dict(values),
        **context,
    )


@resumable("/unblind")
def resume_unblind(request: Request, who: Visitor, kept: dict[str, str]) -> HTMLResponse:
    """The unblinding form with what was typed before a new login (confirmation still asked)."""
    return _unblind_form(request, who, kept, notice="You are logged in again. Check and continue.")


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
    return render(
        request,
        "unblind_confirm.html",
        who,
        title="Confirm the emergency unblinding",
        values=form.kept(),
    )


@pages.post("/unblind")
def unblind(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """Break the code: the arm is shown once, on this response only, never cached."""
    who, form = posted_form
    with acting(state, who) as backend:
        try:
            result = backend.emergency_unblind(form.get("participant"), form.get("reason"))
        except RandomizerError as exc:
            field_name = "reason" if exc.hint is Hint.REASON else "participant"
            return _unblind_form(
                request,
                who,
                form.kept(),
                status_of_error(exc),
                error=str(exc),
                errors={field_name: str(exc)},
            )
    response = render(request, "unblinded.html", who, title="Unblinded", result=result)
    response.headers["Cache-Control"] = "no-store"
    return response


# the pharmacist ------------------------------------------------------------------


def _kits(state: ServerState, who: Visitor) -> list[service.PharmacyKit]:
    with acting(state, who) as backend:
        return backend.pharmacy_list()


@pages.get("/pharmacy")
def pharmacy_queue(request: Request, state: State, who: Signed) -> HTMLResponse:
    """Kits requested and not yet prepared, oldest request first."""
    queue = sorted(
        (k for k in _kits(state, who) if k.status == "requested"),
        key=lambda k: (k.requested_at, k.kit),
    )
    return render(request, "pharmacy_queue.html", who, title="Kits to prepare", queue=queue)


def _lookup_page(
    request: Request, who: Visitor, code: str, status: int = 200, **context: Any
) -> HTMLResponse:
    return render(
        request,
        "pharmacy_lookup.html",
        who,
        status,
        title="Look up a kit",
        values={"code": code},
        **context,
    )


@resumable("/pharmacy/lookup")
def resume_lookup(request: Request, who: Visitor, kept: dict[str, str]) -> HTMLResponse:
    """The lookup form with the code typed before a new login."""
    return _lookup_page(request, who, kept.get("code", ""), notice="You are logged in again.")


@pages.get("/pharmacy/lookup")
def pharmacy_lookup(request: Request, state: State, who: Signed, code: str = "") -> HTMLResponse:
    """Find a kit by its typed or scanned code (read forgivingly, as the CLI does)."""
    if not code.strip():
        return _lookup_page(request, who, code, kit=None)
    try:
        canonical = parse_code(code)
        found = [k for k in _kits(state, who) if k.kit == canonical]
        if not found:
            raise NotFound(f"no kit {canonical} in this trial: check the label")
    except RandomizerError as exc:
        return _lookup_page(
            request,
            who,
            code,
            status_of_error(exc),
            kit=None,
            error=str(exc),
            errors={"code": str(exc)},
        )
    return _lookup_page(request, who, canonical, kit=found[0])


@pages.post("/pharmacy/prepare")
def pharmacy_prepare(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """Record the preparation and show what to prepare; never cached."""
    who, form = posted_form
    code = form.get("code")
    with acting(state, who) as backend:
        try:
            prepared = backend.prepare_kit(code)
        except RandomizerError as exc:
            return _lookup_page(
                request,
                who,
                code,
                status_of_error(exc),
                kit=None,
                error=str(exc),
                errors={"code": str(exc)},
            )
    return render(request, "pharmacy_prepared.html", who, title="Prepare the kit", prep=prepared)


@pages.get("/pharmacy/label/{code}")
def pharmacy_label(request: Request, state: State, who: Signed, code: str) -> HTMLResponse:
    """A printable label for the prepared infusion bag: never the arm."""
    canonical = parse_code(code)
    found = [k for k in _kits(state, who) if k.kit == canonical]
    if not found:
        raise NotFound(f"no kit {canonical} in this trial: check the label")
    kit = found[0]
    if kit.status != "prepared":
        raise StateError(
            f"kit {kit.kit} is {kit.status}, not prepared: print a label once it is prepared"
        )
    qr = segno.make(kit.kit, error="m").svg_inline(scale=4, title=f"Kit code {kit.kit}")
    return render(
        request,
        "pharmacy_label.html",
        who,
        title=f"Label of kit {kit.kit}",
        kit=kit,
        qr=Markup(qr),
    )


@pages.get("/pharmacy/kits")
def pharmacy_kits(request: Request, state: State, who: Signed) -> HTMLResponse:
    """Every kit with content, status and history; above it, kits per visit as a chart."""
    kits = _kits(state, who)
    with acting(state, who) as backend:
        result = backend.report()
    per_visit = charts.kit_table(result, [v.name for v in design_of(state).visits])
    return render(
        request, "pharmacy_kits.html", who, title="Kit list", kits=kits, kit_chart=per_visit
    )


@pages.get("/pharmacy/kits.csv")
def pharmacy_kits_csv(state: State, who: Signed) -> Response:
    """The kit list as CSV, the columns of ``pharmacy list --csv``; never cached."""
    buffer = io.StringIO()
    service.write_kits_csv(buffer, _kits(state, who))
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": 'attachment; filename="kits.csv"',
        },
    )


# reports, audit, verification ----------------------------------------------------


@pages.get("/report")
def report(request: Request, state: State, who: Signed) -> HTMLResponse:
    """The report the role may see (balance by arm only when the library shows it).

    Its charts come from the ``/report/*.svg`` routes; each has its numbers
    in a table beside it.
    """
    with acting(state, who) as backend:
        result = backend.report()
    design = design_of(state)
    balance = charts.balance_table(result) if result.arms_shown else None
    return render(
        request,
        "report.html",
        who,
        title="Report",
        report=result,
        recruitment=charts.recruitment_table(result),
        balance=balance,
        balance_refusal=BALANCE_REFUSAL,
        kit_chart=charts.kit_table(result, [v.name for v in design.visits]),
    )


def _svg(picture: bytes) -> Response:
    """A chart as an image, never cached (it changes with every randomization)."""
    return Response(picture, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@pages.get("/report/recruitment.svg")
def recruitment_chart(state: State, who: Signed) -> Response:
    """Cumulative participants randomized per site and in total (every role; no arm)."""
    with acting(state, who) as backend:
        result = backend.report()
    return _svg(charts.recruitment_chart(result))


@pages.get("/report/balance.svg")
def balance_chart(state: State, who: Signed) -> Response:
    """Running balance by arm per stratum; refused as the balance table is."""
    with acting(state, who) as backend:
        result = backend.report()
    return _svg(charts.balance_chart(result))


@pages.get("/report/kits.svg")
def kit_chart(state: State, who: Signed) -> Response:
    """Kits requested, prepared and voided per visit, and spares left (no arm)."""
    with acting(state, who) as backend:
        result = backend.report()
    names = [v.name for v in design_of(state).visits]
    return _svg(charts.kit_chart(result, visit_names=names))


AUDIT_PAGE = 50
"""Audit events per page."""


@pages.get("/audit")
def audit_trail(
    request: Request,
    state: State,
    who: Signed,
    since: int = 0,
    action: str = "",
    user: str = "",
    subject: str = "",
) -> HTMLResponse:
    """The audit trail, a page at a time, filtered by action, user and subject."""
    shown: list[Any] = []
    position = max(0, since)
    more = False
    with acting(state, who) as backend:
        while len(shown) <= AUDIT_PAGE:
            batch = backend.audit_events(position, AUDIT_PAGE * 4)
            if not batch:
                break
            for event in batch:
                position = event.seq
                if (
                    (not action or event.action == action)
                    and (not user or event.user == user)
                    and (not subject or event.subject == subject)
                ):
                    shown.append(event)
                    if len(shown) > AUDIT_PAGE:
                        break
            if len(batch) < AUDIT_PAGE * 4:
                break
    if len(shown) > AUDIT_PAGE:
        more = True
        shown = shown[:AUDIT_PAGE]
    filters = {"action": action, "user": user, "subject": subject}
    next_since = shown[-1].seq if more and shown else None
    next_query = (
        urlencode({"since": next_since, **{k: v for k, v in filters.items() if v}})
        if next_since is not None
        else ""
    )
    return render(
        request,
        "audit.html",
        who,
        title="Audit trail",
        events=shown,
        values=filters,
        since=since,
        next_query=next_query,
    )


@pages.get("/verify")
def verify_form(request: Request, who: Signed) -> HTMLResponse:
    """Verify the audit trail, optionally against a signed checkpoint note."""
    return render(request, "verify.html", who, title="Verify the audit trail", result=None)


@pages.post("/verify")
def verify(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """Recompute the chain; a pasted checkpoint note is checked with its public key here."""
    who, form = posted_form
    note = form.get("checkpoint").strip()
    public_key = form.get("public_key").strip()
    try:
        signed = None
        if note or public_key:
            if not (note and public_key):
                raise InvalidInput(
                    "a checkpoint note is checked with the public key that signed it: give both",
                    hint=Hint.CHECKPOINT_KEY,
                )
            signed = audit.read_checkpoint(note, public_key.encode("utf-8"))
        with acting(state, who) as backend:
            result = backend.audit_verify(signed)
    except RandomizerError as exc:
        return render(
            request,
            "verify.html",
            who,
            status_of_error(exc),
            title="Verify the audit trail",
            result=None,
            error=str(exc),
            values=form.kept(),
        )
    return render(
        request, "verify.html", who, title="Verify the audit trail", result=result, values={}
    )


# the statistician -------------------------------------------------------------------


@pages.get("/unblinding")
def unblinding_page(request: Request, who: Signed) -> HTMLResponse:
    """The final unblinding export (after lock), as a download."""
    return render(request, "unblinding.html", who, title="Final unblinding")


@pages.post("/unblinding")
def unblinding_export(request: Request, state: State, posted_form: Checked) -> Response:
    """The export, audited before it is sent; never cached."""
    who, _ = posted_form
    with acting(state, who) as backend:
        try:
            export = backend.unblind_all()
        except RandomizerError as exc:
            return render(
                request,
                "unblinding.html",
                who,
                status_of_error(exc),
                title="Final unblinding",
                error=str(exc),
            )
    return Response(
        export.csv,
        media_type="text/csv; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": 'attachment; filename="unblinding.csv"',
            "X-Randomizer-SHA256": export.sha256,
        },
    )


@pages.get("/list/verify")
def list_verify_page(request: Request, who: Signed) -> HTMLResponse:
    """Regenerate the list from its sealed seed and compare (admin; statistician after lock)."""
    return render(request, "list_verify.html", who, title="Verify the list", result=None)


@pages.post("/list/verify")
def list_verify(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """The verification's result."""
    who, _ = posted_form
    with acting(state, who) as backend:
        try:
            result = backend.verify_list()
        except RandomizerError as exc:
            return render(
                request,
                "list_verify.html",
                who,
                status_of_error(exc),
                title="Verify the list",
                result=None,
                error=str(exc),
            )
    return render(request, "list_verify.html", who, title="Verify the list", result=result)


# the admin --------------------------------------------------------------------------


def _users_page(
    request: Request, state: State, who: Visitor, status: int = 200, **context: Any
) -> HTMLResponse:
    with acting(state, who) as backend:
        users = backend.list_users()
    context.setdefault("values", {})
    return render(
        request, "users.html", who, status, title="Users", users=users, roles=list(Role), **context
    )


@pages.get("/users")
def users(request: Request, state: State, who: Signed, done: str = "") -> HTMLResponse:
    """Every user; add, disable, reset a password."""
    notice = {
        "added": "The user is added.",
        "disabled": "The user is disabled.",
        "password": "The password is set; the user's logins are ended.",
    }.get(done, "")
    return _users_page(request, state, who, notice=notice)


@pages.post("/users")
def add_user(request: Request, state: State, posted_form: Checked) -> Response:
    """Add a user with a role and a first password."""
    who, form = posted_form
    with acting(state, who) as backend:
        try:
            role = Role(form.get("role")) if form.get("role") in set(Role) else None
            if role is None:
                raise InvalidInput(
                    f"role {form.get('role')[:20]!r} is not a role: use one of " + ", ".join(Role)
                )
            backend.add_user(form.get("name"), role, form.get("password"))
        except RandomizerError as exc:
            return _users_page(
                request, state, who, status_of_error(exc), error=str(exc), values=form.kept()
            )
    return see_other("/users?done=added")


@pages.post("/users/{name}/disable")
def disable_user(request: Request, state: State, posted_form: Checked, name: str) -> Response:
    """Disable a user; their sessions end at once."""
    who, form = posted_form
    with acting(state, who) as backend:
        try:
            backend.disable_user(name, form.get("reason"))
        except RandomizerError as exc:
            return _users_page(request, state, who, status_of_error(exc), error=str(exc))
    return see_other("/users?done=disabled")


@pages.post("/users/{name}/password")
def reset_password(request: Request, state: State, posted_form: Checked, name: str) -> Response:
    """Set a user's password; their sessions end."""
    who, form = posted_form
    with acting(state, who) as backend:
        try:
            backend.change_password(name, form.get("password"))
        except RandomizerError as exc:
            return _users_page(request, state, who, status_of_error(exc), error=str(exc))
    return see_other("/users?done=password")


@pages.get("/list")
def list_page(request: Request, state: State, who: Signed, done: str = "") -> HTMLResponse:
    """The list's status and generation."""
    with acting(state, who) as backend:
        status = backend.list_status()
    notice = "The list is generated." if done == "generated" else ""
    return render(
        request, "list.html", who, title="Allocation list", list_status=status, notice=notice
    )


@pages.post("/list/generate")
def list_generate(request: Request, state: State, posted_form: Checked) -> Response:
    """Generate the sealed list and kits."""
    who, _ = posted_form
    with acting(state, who) as backend:
        try:
            backend.generate_list()
        except RandomizerError as exc:
            status = backend.list_status()
            return render(
                request,
                "list.html",
                who,
                status_of_error(exc),
                title="Allocation list",
                list_status=status,
                error=str(exc),
            )
    return see_other("/list?done=generated")


@pages.get("/lock")
def lock_form(request: Request, who: Signed) -> HTMLResponse:
    """Lock the database with a reason (a confirmation follows)."""
    return render(request, "lock.html", who, title="Lock the database", result=None)


@pages.post("/lock")
def lock(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """Lock, once the admin confirmed."""
    who, form = posted_form
    if form.get("confirm") != "yes":
        error = "tick the confirmation to lock the database: it cannot be undone"
        return render(
            request,
            "lock.html",
            who,
            400,
            title="Lock the database",
            result=None,
            error=error,
            errors={"confirm": error},
            values=form.kept(),
        )
    with acting(state, who) as backend:
        try:
            result = backend.lock(form.get("reason"))
        except RandomizerError as exc:
            return render(
                request,
                "lock.html",
                who,
                status_of_error(exc),
                title="Lock the database",
                result=None,
                error=str(exc),
                errors={"reason": str(exc)},
                values=form.kept(),
            )
    return render(request, "lock.html", who, title="Lock the database", result=result)
