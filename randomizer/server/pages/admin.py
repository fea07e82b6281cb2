"""The admin's pages: users, the list, the lock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from randomizer.access import Role
from randomizer.backends.interface import Backend
from randomizer.errors import (
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
    logged_in_again,
    pages,
    render,
    resumable,
    see_other,
    signature_errors,
    signature_of,
    status_of_error,
)
from randomizer.server.state import server_state
from randomizer.signatures import meaning_of

_users_form = FormPage("users.html", "Users", {"roles": list(Role)})


def _users_page(
    request: Request, state: State, who: Visitor, status: int = 200, **context: Any
) -> HTMLResponse:
    """The users page: every user (read now) and the forms that change them."""
    with acting(state, who) as backend:
        users = backend.list_users()
    values = context.pop("values", {})
    return _users_form(request, who, values, status, users=users, **context)


@resumable("/users")
def resume_users(request: Request, who: Visitor, kept: dict[str, str]) -> HTMLResponse:
    """The users page with the new user's name and role typed before a new login."""
    return _users_page(
        request,
        server_state(request),
        who,
        values=kept,
        notice=logged_in_again("Check the form, type the password and submit it again."),
    )


def _change_user(
    request: Request, state: State, who: Visitor, change: Callable[[Backend], object], done: str
) -> Response:
    """Make one change to a user, then the users page: ``?done=`` it, or the refusal."""
    with acting(state, who) as backend:
        try:
            change(backend)
        except RandomizerError as exc:
            return _users_page(request, state, who, status_of_error(exc), error=str(exc))
    return see_other(f"/users?done={done}")


@pages.get("/users")
def users(request: Request, state: State, who: Signed, done: str = "") -> HTMLResponse:
    """Every user; add, disable, reset a password."""
    notice = {
        "added": "The user is added.",
        "disabled": "The user is disabled.",
        "password": "The password is set; the user's logins are ended.",
        "sites": "The user's sites are set.",
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
            backend.add_user(
                form.get("name"), role, form.get("password"), sites=form.get_all("sites")
            )
        except RandomizerError as exc:
            return _users_page(
                request, state, who, status_of_error(exc), error=str(exc), values=form.kept()
            )
    return see_other("/users?done=added")


@pages.post("/users/{name}/disable")
def disable_user(request: Request, state: State, posted_form: Checked, name: str) -> Response:
    """Disable a user; their sessions end at once."""
    who, form = posted_form
    reason = form.get("reason")
    return _change_user(
        request, state, who, lambda backend: backend.disable_user(name, reason), "disabled"
    )


@pages.post("/users/{name}/password")
def reset_password(request: Request, state: State, posted_form: Checked, name: str) -> Response:
    """Set a user's password; their sessions end."""
    who, form = posted_form
    password = form.get("password")
    return _change_user(
        request, state, who, lambda backend: backend.change_password(name, password), "password"
    )


@pages.post("/users/{name}/sites")
def set_user_sites(request: Request, state: State, posted_form: Checked, name: str) -> Response:
    """Limit a user to the sites ticked; none ticked makes them trial-wide."""
    who, form = posted_form
    chosen = form.get_all("sites")
    return _change_user(
        request, state, who, lambda backend: backend.set_user_sites(name, chosen), "sites"
    )


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


_lock_form = FormPage(
    "lock.html", "Lock the database", {"result": None, "meaning": meaning_of("lock")}
)
_lock_form.resumable("/lock", "Check the reason and confirm again.")


@pages.get("/lock")
def lock_form(request: Request, who: Signed) -> HTMLResponse:
    """Lock the database with a reason (a confirmation follows)."""
    return _lock_form(request, who, {})


@pages.post("/lock")
def lock(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """Lock, once the admin confirmed."""
    who, form = posted_form
    if form.get("confirm") != "yes":
        error = "tick the confirmation to lock the database: it cannot be undone"
        return _lock_form(request, who, form.kept(), 400, error=error, errors={"confirm": error})
    with acting(state, who) as backend:
        try:
            result = backend.lock(form.get("reason"), signature=signature_of(form, "lock"))
        except RandomizerError as exc:
            errors = signature_errors(exc) or {"reason": str(exc)}
            return _lock_form.refused(request, who, form.kept(), exc, errors=errors)
    return _lock_form(request, who, {}, result=result)


_list_approve_form = FormPage(
    "list_approve.html",
    "Approve the allocation list",
    {"approval": None, "meaning": meaning_of("list.approve")},
)


def _list_approve_page(
    request: Request, state: State, who: Visitor, status: int = 200, **context: Any
) -> HTMLResponse:
    """The list's QC summary (read now) with the approval form or the approval made."""
    with acting(state, who) as backend:
        list_status = backend.list_status()
    return _list_approve_form(request, who, {}, status, list_status=list_status, **context)


@pages.get("/list/approve")
def list_approve_page(request: Request, state: State, who: Signed) -> HTMLResponse:
    """The list's blinded QC summary and, while it is a draft, the signed approval form."""
    return _list_approve_page(request, state, who)


@pages.post("/list/approve")
def list_approve(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """Approve the draft list for go-live (the library decides who may)."""
    who, form = posted_form
    with acting(state, who) as backend:
        try:
            approval = backend.approve_list(signature=signature_of(form, "list.approve"))
        except RandomizerError as exc:
            errors = signature_errors(exc)
            return _list_approve_page(
                request, state, who, status_of_error(exc), error=str(exc), errors=errors
            )
    return _list_approve_page(request, state, who, approval=approval)
