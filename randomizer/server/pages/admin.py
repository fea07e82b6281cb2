"""The admin's pages: users, the list, the lock."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from randomizer.access import Role
from randomizer.errors import (
    InvalidInput,
    RandomizerError,
)
from randomizer.server.pages.core import (
    Checked,
    Signed,
    State,
    Visitor,
    acting,
    pages,
    render,
    resumable,
    see_other,
    status_of_error,
)
from randomizer.server.state import server_state


def _users_page(
    request: Request, state: State, who: Visitor, status: int = 200, **context: Any
) -> HTMLResponse:
    with acting(state, who) as backend:
        users = backend.list_users()
    context.setdefault("values", {})
    return render(
        request, "users.html", who, status, title="Users", users=users, roles=list(Role), **context
    )


@resumable("/users")
def resume_users(request: Request, who: Visitor, kept: dict[str, str]) -> HTMLResponse:
    """The users page with the new user's name and role typed before a new login."""
    return _users_page(
        request,
        server_state(request),
        who,
        values=kept,
        notice="You are logged in again. Check the form, type the password and submit it again.",
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


@resumable("/lock")
def resume_lock(request: Request, who: Visitor, kept: dict[str, str]) -> HTMLResponse:
    """The lock form with the reason typed before a new login (to confirm again)."""
    return render(
        request,
        "lock.html",
        who,
        title="Lock the database",
        result=None,
        values=kept,
        notice="You are logged in again. Check the reason and confirm again.",
    )


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
