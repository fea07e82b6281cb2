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

from randomizer.server.pages import admin, investigator, oversight, pharmacy
from randomizer.server.pages.core import (
    CONTENT_SECURITY_POLICY,
    STATIC,
    TASKS,
    BadForm,
    LoginNeeded,
    error_page,
    is_page,
    login_needed,
    pages,
)

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "STATIC",
    "TASKS",
    "BadForm",
    "LoginNeeded",
    "admin",
    "error_page",
    "investigator",
    "is_page",
    "login_needed",
    "oversight",
    "pages",
    "pharmacy",
]
