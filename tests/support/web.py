"""The web pages under test: the app in-process over https, a browser-like client, form helpers.

The session cookie is ``__Host-`` prefixed and ``Secure`` in every deployment;
the tests speak ``https://`` to the app in-process (httpx's ASGI transport,
driven synchronously), so the client's cookie jar sends it as a browser would.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import anyio
import httpx
from fastapi import FastAPI

from randomizer.server.app import create_app
from randomizer.server.main import ServeOptions, open_state
from randomizer.server.state import ServerState
from tests.support.blinded_path import anonymous
from tests.support.exosome import ELIGIBLE
from tests.support.trial import PASSWORDS

BASE_URL = "https://testserver"

_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


class InProcess(httpx.BaseTransport):
    """httpx's ASGI transport for a synchronous client: one event loop per request."""

    def __init__(self, app: FastAPI) -> None:
        # as a browser would: the response the app sent, not the exception behind it
        self.transport = httpx.ASGITransport(
            app=app, client=("127.0.0.1", 50000), raise_app_exceptions=False
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Run the app on ``request`` and read its whole body."""

        async def call() -> httpx.Response:
            response = await self.transport.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        return anyio.run(call)


@dataclass
class Browser:
    """A client that keeps cookies and the last page's CSRF token, as a browser does."""

    client: httpx.Client
    state: ServerState
    last: httpx.Response | None = None
    user: str = ""
    password: str = ""
    responses: list[httpx.Response] = field(default_factory=list)
    """Every response this browser received, in order (for checks across a whole visit)."""

    def get(self, path: str, **params: str) -> httpx.Response:
        """GET a page (redirects not followed)."""
        self.last = self.client.get(path, params=params or None, follow_redirects=False)
        self.responses.append(self.last)
        return self.last

    def csrf(self) -> str:
        """The CSRF field of the last page shown."""
        assert self.last is not None, "no page shown yet"
        found = _CSRF.search(self.last.text)
        assert found, f"no CSRF field on the page: {self.last.text[:400]}"
        return found.group(1)

    def hidden(self, action: str) -> dict[str, str]:
        """The hidden fields of the last page's first form posting to ``action``."""
        assert self.last is not None
        start = self.last.text.index(f'<form method="post" action="{action}"')
        form = self.last.text[start : self.last.text.index("</form>", start)]
        return {html.unescape(name): html.unescape(value) for name, value in _HIDDEN.findall(form)}

    def post(
        self,
        path: str,
        data: Mapping[str, str] | None = None,
        *,
        csrf: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST a form with the last page's CSRF token (or ``csrf``), as a same-origin browser."""
        fields = dict(data or {})
        if "csrf_token" not in fields:
            fields["csrf_token"] = csrf if csrf is not None else self.csrf()
        sent = {"Sec-Fetch-Site": "same-origin", **(headers or {})}
        self.last = self.client.post(path, data=fields, headers=sent, follow_redirects=False)
        self.responses.append(self.last)
        return self.last

    def follow(self) -> httpx.Response:
        """Follow the redirect of the last response with a GET."""
        assert self.last is not None and self.last.status_code in (302, 303), self.last
        return self.get(self.last.headers["location"])

    def follow_link(self, text: str) -> httpx.Response:
        """GET the first link of the last page whose text is ``text``."""
        assert self.last is not None
        found = re.search(rf'<a href="([^"]+)"[^>]*>{re.escape(text)}</a>', self.last.text)
        assert found, f"no link {text!r} on the page"
        return self.get(html.unescape(found.group(1)))

    def login(self, user: str, password: str | None = None) -> httpx.Response:
        """Log in through the login form; returns the first page."""
        self.get("/login")
        self.post("/login", {"user": user, "password": password or PASSWORDS[user], "next": "/"})
        assert self.last is not None
        assert self.last.status_code == 303, self.last.text
        self.user = user
        self.password = password or PASSWORDS[user]
        return self.follow()

    def signed(self, data: Mapping[str, str] | None = None) -> dict[str, str]:
        """``data`` with the logged-in user's electronic signature (their password re-entered)."""
        assert self.password, "log in before signing"
        return {**(data or {}), "password": self.password}

    def logout(self) -> httpx.Response:
        """Log out through the button of the last page."""
        return self.post("/logout")


@contextmanager
def web_app(
    db_url: str, key_file: Path, clock: Callable[[], datetime] | None = None
) -> Iterator[Callable[[], Browser]]:
    """The app of one trial in-process; yields a factory of browsers (each its own cookies)."""
    state = open_state(ServeOptions(db_url=db_url, key_file=key_file))
    if clock is not None:
        state.clock = clock
    app = create_app(state)
    clients: list[httpx.Client] = []

    def browser() -> Browser:
        client = httpx.Client(transport=InProcess(app), base_url=BASE_URL)
        clients.append(client)
        return Browser(client, state)

    try:
        yield browser
    finally:
        for client in clients:
            client.close()
        state.store.dispose()


def text_of(page: str) -> str:
    """A page's visible text, roughly: tags dropped, entities decoded, spaces folded."""
    without = re.sub(r"<[^>]+>", " ", page)
    return " ".join(html.unescape(without).split())


def randomize_form(
    participant: str, on: date | None = None, site: str = "WAW", **overrides: str
) -> dict[str, str]:
    """The fields of a filled-in randomize form: the eligible answers with ``overrides``."""
    fields = {
        "page": "/randomize",
        "participant": participant,
        "site": site,
        "date": on.isoformat() if on else "",
    }
    fields.update({f"answer.{name}": value for name, value in {**ELIGIBLE, **overrides}.items()})
    return fields


def randomize_through_pages(browser: Browser, participant: str, on: date | None = None) -> str:
    """Randomize an eligible participant through the form and its confirmation; the result page."""
    browser.get("/randomize")
    confirm = browser.post("/randomize/confirm", randomize_form(participant, on))
    assert confirm.status_code == 200, confirm.text
    done = browser.post("/randomize", browser.signed(browser.hidden("/randomize")))
    assert done.status_code == 303, done.text
    return browser.follow().text


ONE_TIME = re.compile(r"[0-9a-f]{16}\.\d+\.[0-9a-f]{64}")
"""A one-time confirmation token (differs on every page shown)."""


def everything(response: httpx.Response) -> str:
    """What a response shows a browser: status, headers (cookies, redirect) and body."""
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    return f"{response.status_code}\n{headers}\n\n{response.text}"


def shape(response: httpx.Response) -> str:
    """A response with what may differ between two participants masked (ids, kit codes,
    randomization numbers, one-time tokens, cookies, dates of the response)."""
    text = re.sub(
        r"(?im)^(set-cookie|date|content-length): .*$", r"\1: <masked>", everything(response)
    )
    return anonymous(ONE_TIME.sub("<once>", text))


class Clock:
    """A settable clock for the server: the time now, until a test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def logged_in(make: Callable[[], Browser], user: str, password: str | None = None) -> Browser:
    """A new browser of the app, logged in as ``user``."""
    b = make()
    b.login(user, password)
    return b
