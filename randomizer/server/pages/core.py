"""The pages' shared machinery: forms, sessions, CSRF checks, rendering; login and logout."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from randomizer import logins
from randomizer.allocation import service
from randomizer.backends.interface import Backend
from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials, Principal
from randomizer.design import TrialDesign, parse_design
from randomizer.errors import (
    AuthenticationFailed,
    RandomizerError,
    TooManyAttempts,
)
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
from randomizer.signatures import Signature, meaning_of

HERE = Path(__file__).parent.parent
STATIC = HERE / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""Every response's policy: nothing inline, nothing from elsewhere, never framed."""

KEPT_PREFIX = "keep."
"""Prefix of the hidden fields of the login form that carry a form's typed values."""

PASSWORD_FIELD = "password"
"""The field of a signing form where the signer re-enters their password."""

NEVER_KEPT = frozenset({CSRF_FIELD, PASSWORD_FIELD, "new_password", "idem", "page", "confirm"})
"""Fields never carried through a new login nor into a later page: secrets, one-time tokens."""

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


def utc_time(value: str | None) -> Markup:
    """A UTC time as ``2026-11-30 11:57 UTC`` in a ``<time>`` element with the full ISO value.

    The trail's times (:func:`randomizer.audit.utc_text`) carry microseconds that no
    reader needs on a page; the ``datetime`` attribute keeps them. Empty is empty; text
    that is not a time is shown as it is (escaped).
    """
    if not value:
        return Markup("")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return escape(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    shown = parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Markup('<time datetime="{}">{}</time>').format(value, shown)


templates.filters["utc"] = utc_time


def detail_pairs(details: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An audit event's details as ``(key, value)`` lines: text as it is, the rest as JSON.

    Each pair is a line of its own on the page and wraps inside its cell, so that no
    value is cut off however long it is.
    """
    return [
        (str(key), value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        for key, value in details.items()
    ]


templates.filters["pairs"] = detail_pairs


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
        Task(
            "/reviews",
            "Unblinding reviews",
            "Review each emergency unblinding and close it with a note.",
        ),
    ),
    "statistician": (
        Task("/report", "Report", "Recruitment and kit status; balance by arm after lock."),
        Task("/unblinding", "Final unblinding", "After lock: the unblinding export (audited)."),
        Task("/list/verify", "Verify the list", "After lock: regenerate the list and compare."),
        Task(
            "/list/approve",
            "Approve the list",
            "Review the list's blinded QC summary and approve it for go-live.",
        ),
    ),
    "admin": (
        Task("/users", "Users", "Add, disable and reset the password of users."),
        Task("/list", "Allocation list", "The list's status; generate it."),
        Task("/lock", "Lock", "Lock the database at the end of the trial."),
        Task("/audit", "Audit trail", "Every recorded event, with filters."),
        Task("/verify", "Verify", "Check the audit trail's integrity, optionally a checkpoint."),
        Task("/unblind", "Emergency unblinding", "Break the code for one participant."),
        Task(
            "/reviews",
            "Unblinding reviews",
            "Review each emergency unblinding and close it with a note.",
        ),
    ),
}
"""What each role can do, in the order its first page lists it."""


def signature_of(form: Form, action: str) -> Signature:
    """The electronic signature a signing form posted: the re-entered password, the meaning
    of ``action`` from the library (the page shows that same text, never a typed one)."""
    return Signature(form.get(PASSWORD_FIELD), meaning_of(action))


def signature_errors(exc: RandomizerError) -> dict[str, str]:
    """The refusal next to the password field when it is the signature's, else nothing."""
    if isinstance(exc, AuthenticationFailed | TooManyAttempts):
        return {PASSWORD_FIELD: str(exc)}
    return {}


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
    lists: dict[str, list[str]] = field(default_factory=dict)
    """Every value of each name, in order (checkboxes sharing a name)."""

    def get(self, name: str, default: str = "") -> str:
        """One field, or ``default``."""
        return self.values.get(name, default)

    def get_all(self, name: str) -> list[str]:
        """Every value posted under ``name`` (none: an empty list)."""
        return list(self.lists.get(name, []))

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
    lists: dict[str, list[str]] = {}
    for name, value in pairs:
        if "\0" in name or "\0" in value:
            raise BadForm("the form holds a NUL character: remove it and try again")
        values.setdefault(name, value)
        lists.setdefault(name, []).append(value)
    return Form(values, lists)


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


_designs: dict[int, tuple[ServerState, TrialDesign]] = {}


def design_of(state: ServerState) -> TrialDesign:
    """The trial's design (public), parsed once per server."""
    held = _designs.get(id(state))
    # the state is held with its design, so its id cannot be reused by another one
    if held is None or held[0] is not state:
        held = (state, parse_design(logins.design_toml(state.store)))
        _designs[id(state)] = held
    return held[1]


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


ResumeMatch = Callable[[Request, Visitor, dict[str, str], "re.Match[str]"], HTMLResponse]
RESUMABLE_PATTERNS: list[tuple[re.Pattern[str], ResumeMatch]] = []
"""Forms on pages with a variable path (a participant's page), by a pattern of that path."""


def resumable_pattern(pattern: str) -> Callable[[ResumeMatch], ResumeMatch]:
    """Register the renderer of form pages whose whole path matches ``pattern``."""

    def register(function: ResumeMatch) -> ResumeMatch:
        RESUMABLE_PATTERNS.append((re.compile(pattern), function))
        return function

    return register


def resume_for(page: str) -> Resume | None:
    """The renderer of a form page that may come back filled in after a new login, if any."""
    if page in RESUMABLE:
        return RESUMABLE[page]
    for pattern, function in RESUMABLE_PATTERNS:
        found = pattern.fullmatch(page)
        if found is not None:
            return lambda request, who, kept: function(request, who, kept, found)
    return None


LOGGED_IN_AGAIN = "You are logged in again."
"""The notice of a form that comes back filled in after a new login, before what to check."""


def logged_in_again(check: str = "") -> str:
    """The notice of a form back after a new login, with what to check before submitting."""
    return f"{LOGGED_IN_AGAIN} {check}" if check else LOGGED_IN_AGAIN


@dataclass(frozen=True)
class FormPage:
    """A page with a form: its template and title, rendered with the values typed in it.

    Calling it renders the form (``values`` fill the fields; ``context`` adds to or
    overrides :attr:`context`, the title included). :meth:`refused` renders it again
    with a library refusal, :meth:`resumable` lets it come back after a new login.
    """

    template: str
    title: str
    context: Mapping[str, Any] = field(default_factory=dict)
    """What every rendering of the form has (a signing form's meaning, say)."""

    def __call__(
        self,
        request: Request,
        who: Visitor,
        values: Mapping[str, str],
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        """The form filled with ``values``, answered with ``status``."""
        shown = {"title": self.title, **self.context, **context}
        return render(request, self.template, who, status, values=dict(values), **shown)

    def refused(
        self,
        request: Request,
        who: Visitor,
        values: Mapping[str, str],
        exc: RandomizerError,
        field_name: str = "",
        **context: Any,
    ) -> HTMLResponse:
        """The form again after a refusal: the refusal's status, its message above the form
        and, given ``field_name``, next to that field (``errors=`` names other fields)."""
        errors = {field_name: str(exc)} if field_name else {}
        shown = {"error": str(exc), "errors": errors, **context}
        return self(request, who, values, status_of_error(exc), **shown)

    def resumable(self, path: str, check: str = "") -> Resume:
        """Register the form of ``path`` for :data:`RESUMABLE`: after a new login it comes
        back with what was typed and the notice :func:`logged_in_again` of ``check``."""

        def resume(request: Request, who: Visitor, kept: dict[str, str]) -> HTMLResponse:
            return self(request, who, kept, notice=logged_in_again(check))

        return resumable(path)(resume)


def login_needed(request: Request, exc: LoginNeeded) -> Response:
    """Back to the login page: a redirect for a page, the login form keeping a post's values."""
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return see_other(f"/login?next={quoted(safe_next(target))}")
    page = exc.page if resume_for(exc.page) is not None else ""
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


def quoted(path: str) -> str:
    """A path for a redirect, each segment percent-encoded."""
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
    page = form.get("page") if resume_for(form.get("page")) is not None else ""
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
        resume = resume_for(page)
        assert resume is not None
        response = resume(request, who, kept)
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
