"""Web sessions and CSRF for the pages: a cookie holding a ``web`` login token, and form tokens.

The session cookie (:data:`SESSION_COOKIE`) holds the token of a ``web``
login (:mod:`randomizer.sessions`: a random secret whose SHA-256 alone is
stored, with an idle and an absolute timeout, revoked at logout and when the
user is disabled). It is ``__Host-`` prefixed, ``Secure``, ``HttpOnly`` and
``SameSite=Lax``: always, including in tests, which talk to the app over
``https://`` (browsers treat ``http://127.0.0.1`` and ``localhost`` as
secure contexts, so a local browser keeps the cookie too).

CSRF is a signed double-submit: a random :data:`CSRF_COOKIE` (``__Host-``,
so no other origin can set it) and, in every state-changing form, the field
:data:`CSRF_FIELD`, an HMAC of that cookie and the session id under a key
derived from the trial key. A token from another session, from before a login
or a logout, or for another cookie is stale and refused. Cross-site non-GET
requests are also refused by ``Sec-Fetch-Site`` before any of this runs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request, Response

SESSION_COOKIE = "__Host-session"
"""The cookie holding the web login token."""

CSRF_COOKIE = "__Host-csrf"
"""The cookie holding the random half of the double-submit CSRF pair."""

CSRF_FIELD = "csrf_token"
"""The form field every state-changing form carries."""

SAFE_FETCH_SITES = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values a state-changing request may carry (absent is also accepted:
non-browser clients and old browsers do not send it; the CSRF token still applies)."""

_CSRF_LABEL = b"randomizer web csrf v1"


@dataclass(frozen=True)
class CsrfPair:
    """The CSRF cookie value of a request, and whether the response must set it."""

    cookie: str
    new: bool


def csrf_key(trial_key: bytes) -> bytes:
    """The CSRF signing key, derived from the trial key (the same in every worker)."""
    return hmac.new(trial_key, _CSRF_LABEL, hashlib.sha256).digest()


def csrf_cookie_of(request: Request) -> CsrfPair:
    """The request's CSRF cookie, or a new random one to set."""
    value = request.cookies.get(CSRF_COOKIE, "")
    if len(value) == 43 and value.replace("-", "").replace("_", "").isalnum():
        return CsrfPair(value, False)
    return CsrfPair(secrets.token_urlsafe(32), True)


def form_token(key: bytes, cookie: str, session_id: str) -> str:
    """The CSRF field for a form shown to ``session_id`` ("" before login) with ``cookie``."""
    message = f"{cookie}|{session_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def token_matches(key: bytes, cookie: str, session_id: str, submitted: str) -> bool:
    """Whether a submitted CSRF field belongs to this cookie and session."""
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(form_token(key, cookie, session_id), submitted)


def set_cookie(response: Response, name: str, value: str) -> None:
    """Set a ``__Host-`` cookie: Secure, HttpOnly, SameSite=Lax, Path=/, for the browser session."""
    response.set_cookie(name, value, path="/", secure=True, httponly=True, samesite="lax")


def clear_cookie(response: Response, name: str) -> None:
    """Delete a ``__Host-`` cookie (with the attributes the prefix requires)."""
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="lax")


def cross_site(request: Request) -> bool:
    """Whether a browser says this request came from another site."""
    site = request.headers.get("sec-fetch-site")
    return site is not None and site not in SAFE_FETCH_SITES
