"""The backends the contract suite runs against, and the trial each contract test gets.

``BACKEND_KINDS`` names them; the ``trial`` fixture is parametrized over it,
so a new backend joins the contract by adding its name and a factory here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest

from randomizer.backends.http import HttpBackend
from randomizer.backends.interface import Backend
from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials
from tests.backends.live import live_server
from tests.support.trial import PASSWORDS, TrialFiles

BACKEND_KINDS = ["local", "http"]
"""Every backend the contract suite runs against."""


@dataclass
class ContractTrial:
    """A prepared trial and a way to act on it as any user through one kind of backend."""

    files: TrialFiles
    connect: Callable[[str, str], Backend]
    passwords: dict[str, str] = field(default_factory=lambda: dict(PASSWORDS))
    opened: list[Backend] = field(default_factory=list)

    def as_user(self, name: str, password: str | None = None) -> Backend:
        """A backend acting as ``name`` (with that user's password unless one is given)."""
        backend = self.connect(name, password or self.passwords.get(name, ""))
        self.opened.append(backend)
        return backend


def _local(files: TrialFiles) -> Callable[[str, str], Backend]:
    def connect(user: str, password: str) -> Backend:
        return LocalBackend(files.db_url, files.key_file, lambda: Credentials(user, password))

    return connect


def _http(url: str) -> Callable[[str, str], Backend]:
    def connect(user: str, password: str) -> Backend:
        return HttpBackend(url, credentials=lambda: Credentials(user, password))

    return connect


@pytest.fixture(params=BACKEND_KINDS)
def trial(request: pytest.FixtureRequest, trial_with_list: TrialFiles) -> Iterator[ContractTrial]:
    """The prepared trial, reached through each backend of :data:`BACKEND_KINDS` in turn.

    ``http`` runs a real server on a loopback port with the trial's key and
    database; its clients hold neither.
    """
    with ExitStack() as stack:
        if request.param == "http":
            url = stack.enter_context(live_server(trial_with_list.db_url, trial_with_list.key_file))
            prepared = ContractTrial(trial_with_list, _http(url))
        else:
            prepared = ContractTrial(trial_with_list, _local(trial_with_list))
        yield prepared
        for backend in prepared.opened:
            backend.close()
