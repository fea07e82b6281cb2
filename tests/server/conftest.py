"""Fixtures of the page tests: the app of a trial in-process, and its clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.trial import Run, TrialFiles
from tests.support.web import Browser, Clock, web_app


@pytest.fixture
def clock() -> Clock:
    """The server's clock, settable by the test."""
    return Clock()


@pytest.fixture
def browser(trial_with_list: TrialFiles, clock: Clock) -> Iterator[Callable[[], Browser]]:
    """The trial with its list, in the app; a factory of browsers (each its own cookies)."""
    with web_app(trial_with_list.db_url, trial_with_list.key_file, clock) as make:
        yield make


@pytest.fixture
def pages(run: Run, by_arm: dict[str, str]) -> Iterator[Callable[[], Browser]]:
    """The trial with P-001..P-004 randomized, in the app."""
    with web_app(run.files.db_url, run.files.key_file) as make:
        yield make
