"""The ASGI app: routes, the one error boundary, body limits and headers.

Errors cross the wire by class (:data:`STATUS`), with the library's message as
a one-line JSON body, so the remote client raises the same class and the CLI
prints the same ``Error:`` line. No response carries a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from randomizer import __version__, access, logins, mail
from randomizer.backends.wire import error_to_wire
from randomizer.errors import (
    AuthenticationFailed,
    Busy,
    InvalidInput,
    KeyFileError,
    NotAuthorized,
    NotFound,
    RandomizerError,
    StoreError,
    TooManyAttempts,
)
from randomizer.server import api, pages, websession
from randomizer.server.state import ServerState

MAX_BODY = 1024 * 1024
"""The largest request body accepted (1 MiB); a larger one is refused with 413."""

STATUS: tuple[tuple[type[RandomizerError], int], ...] = (
    (InvalidInput, 400),
    (TooManyAttempts, 429),
    (AuthenticationFailed, 401),
    (NotAuthorized, 403),
    (NotFound, 404),
    (Busy, 503),
    (StoreError, 503),
    (KeyFileError, 503),
    (RandomizerError, 409),
)
"""HTTP status of each error class, most specific first. Every other refusal
(a state, an ineligible participant, an integrity failure) is 409."""

log = logging.getLogger("randomizer.server")


def status_of(error: RandomizerError) -> int:
    """The HTTP status of a library error."""
    return next(code for cls, code in STATUS if isinstance(error, cls))


def refusal_headers(error: RandomizerError) -> dict[str, str] | None:
    """The headers a refusal carries: the scheme to log in with, or when to try again."""
    if isinstance(error, TooManyAttempts):
        return {"Retry-After": str(max(1, error.retry_after))}
    if isinstance(error, AuthenticationFailed):
        return {"WWW-Authenticate": "Bearer"}
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes, declared or streamed, with 413."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, counting its body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(send, self.limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = JSONResponse(
        {"error": f"request body too large: at most {limit} bytes", "kind": "InvalidInput"},
        status_code=413,
    ).body
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def with_headers(response: Response) -> Response:
    """Every response's headers: never cached unless said, a strict CSP, never framed."""
    _secure(response.headers)
    return response


def _secure(headers: MutableHeaders) -> None:
    headers.setdefault("Cache-Control", "no-store")
    headers["Content-Security-Policy"] = pages.CONTENT_SECURITY_POLICY
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "DENY"


class SecurityHeaders:
    """Give every response :func:`with_headers`'s headers; refuse a page form from another site.

    A plain ASGI middleware that edits the response's start message: it neither
    reads nor copies the body, and the request goes on in the same task (what
    ``@app.middleware`` costs, a task and a stream per request, is not paid).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a cross-site form post to a page, else pass on with the headers added."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not scope["path"].startswith("/api/") and scope["method"] not in (
            "GET",
            "HEAD",
            "OPTIONS",
        ):
            request = Request(scope, receive)
            if websession.cross_site(request):
                refusal = with_headers(
                    pages.error_page(request, 403, "refused: this form was sent from another site")
                )
                await refusal(scope, receive, send)
                return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                _secure(MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, secured)


def create_app(state: ServerState, audit_lifecycle: bool = True) -> FastAPI:
    """The app serving one trial from ``state``; start and stop are audited."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        details: dict[str, Any] = {"version": __version__, "pid": os.getpid()}
        # made now, so the first login of an unknown user costs one hash like any other
        access.dummy_hash()
        if audit_lifecycle:
            logins.record_server_event(
                state.store, state.key_source, state.clock(), "server.start", details
            )
        sender = None if state.mail is None else asyncio.create_task(send_mail_forever(state))
        try:
            yield
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            if audit_lifecycle:
                logins.record_server_event(
                    state.store, state.key_source, state.clock(), "server.stop", details
                )

    app = build_app(lifespan)
    app.state.randomizer = state
    return app


async def send_mail_forever(state: ServerState) -> None:
    """The server's background sender: drain the outbox every ``interval`` seconds.

    Each run is :func:`randomizer.mail.deliver_outbox` in a worker thread; a run
    that fails (the database busy, a bug) is logged and the next run tries again,
    so one bad run stops no later notification.
    """
    settings = state.mail
    assert settings is not None
    while True:
        try:
            await asyncio.to_thread(mail.deliver_outbox, state.store, settings, state.clock())
        except Exception:
            _mail_log.exception("sending the notification e-mails failed; trying again later")
        await asyncio.sleep(settings.interval)


_mail_log = logging.getLogger("randomizer.mail")


def build_app(lifespan: Lifespan[FastAPI] | None = None) -> FastAPI:
    """The routes, the error boundary and the headers, without a trial behind them.

    :func:`create_app` gives it its trial; on its own it serves only its
    OpenAPI document (:mod:`randomizer.server.openapi`).
    """
    app = FastAPI(
        title="randomizer",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Blinded randomization and allocation for clinical trials.",
    )
    app.include_router(api.public)
    app.include_router(api.router)
    app.include_router(pages.pages)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")

    @app.exception_handler(pages.LoginNeeded)
    async def login_needed(request: Request, exc: pages.LoginNeeded) -> Response:
        return pages.login_needed(request, exc)

    @app.exception_handler(pages.BadForm)
    async def bad_form(request: Request, exc: pages.BadForm) -> Response:
        return pages.error_page(request, 400, str(exc))

    @app.exception_handler(RandomizerError)
    async def refused(request: Request, exc: RandomizerError) -> Response:
        if pages.is_page(request):
            return pages.error_page(request, status_of(exc), str(exc))
        return JSONResponse(
            error_to_wire(exc), status_code=status_of(exc), headers=refusal_headers(exc)
        )

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> Response:
        if pages.is_page(request):
            return pages.error_page(request, 400, "the page's address or form is not valid")
        problems = []
        for error in exc.errors()[:3]:
            if error.get("type") == "json_invalid":
                problems.append("body: not valid JSON")
                continue
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        return JSONResponse(
            {
                "error": _one_line("malformed request: " + "; ".join(problems)),
                "kind": "InvalidInput",
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        text = {404: "no such endpoint", 405: "method not allowed"}.get(
            exc.status_code, _one_line(str(exc.detail))
        )
        if pages.is_page(request):
            page_text = {404: "no such page"}.get(exc.status_code, text)
            response = pages.error_page(request, exc.status_code, page_text)
            response.headers.update(exc.headers or {})
            return response
        kind = "NotFound" if exc.status_code == 404 else "InvalidInput"
        # keep what the status needs, such as the Allow header of a 405
        return JSONResponse(
            {"error": text, "kind": kind}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        # the boundary: the log names the class, the response names nothing
        log.error("internal error in a request: %s", type(exc).__name__)
        response: Response
        if pages.is_page(request):
            response = pages.error_page(request, 500, "internal error; nothing was committed")
        else:
            response = JSONResponse(
                {"error": "internal error; nothing was committed", "kind": "RandomizerError"},
                status_code=500,
            )
        # this answer bypasses the middleware below: it gets the same headers here
        return with_headers(response)

    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit)
    return app
