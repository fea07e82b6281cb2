"""What the server holds for its whole life: the store, the trial key, the clock, its settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi import Request

from randomizer import audit
from randomizer.context import KeySource
from randomizer.mail import MailSettings
from randomizer.sessions import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT
from randomizer.store import Store


@dataclass
class ServerState:
    """The one store and the trial key, read once at start and held in memory only."""

    store: Store
    trial_key: bytes = field(repr=False)
    clock: Callable[[], datetime] = audit.now_utc
    token_idle: timedelta = IDLE_TIMEOUT
    token_absolute: timedelta = ABSOLUTE_TIMEOUT
    mail: MailSettings | None = None
    """SMTP settings: the server then sends the outbox's notifications in the background."""

    @property
    def key_source(self) -> KeySource:
        """The held key as the library's key source."""
        key = self.trial_key
        return lambda: key


def server_state(request: Request) -> ServerState:
    """The state of the app serving ``request``."""
    state: ServerState = request.app.state.randomizer
    return state


def client_address(request: Request, state: ServerState) -> str:
    """The client's address as the ASGI server saw it (after trusted proxy headers only)."""
    return request.client.host if request.client is not None else ""
