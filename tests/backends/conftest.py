"""The backends the contract suite runs against, and the trial each contract test gets.

``BACKEND_KINDS`` names them; the ``trial`` fixture is parametrized over it,
so a new backend joins the contract by adding its name and a factory here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from randomizer.backends.interface import Backend
from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials
from tests.support.trial import PASSWORDS, TrialFiles

BACKEND_KINDS = ["local"]
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


@pytest.fixture(params=BACKEND_KINDS)
def trial(request: pytest.FixtureRequest, trial_with_list: TrialFiles) -> Iterator[ContractTrial]:
    """The prepared trial, reached through each backend of :data:`BACKEND_KINDS` in turn."""
    factories = {"local": _local}
    prepared = ContractTrial(trial_with_list, factories[request.param](trial_with_list))
    yield prepared
    for backend in prepared.opened:
        backend.close()
