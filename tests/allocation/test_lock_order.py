"""One lock order for every writer: the audit trail's head first, then the rows.

A login recorded at the start of an action locked the trail's head before the
randomization locked its stratum; a randomization without a fresh login locked the
stratum first and the head at its event. Two such actions at once deadlocked on
PostgreSQL (``deadlock detected``, one of them refused). Every action now locks the
head before anything else, and a backend kept for several actions records its one
login once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials
from tests.support.blinded_path import FOUR_DAY0
from tests.support.database import audit_rows
from tests.support.exosome import ELIGIBLE
from tests.support.trial import PASSWORDS, TrialFiles, signature


@pytest.fixture
def backend(trial_with_list: TrialFiles) -> Iterator[LocalBackend]:
    files = trial_with_list
    kept = LocalBackend(
        files.db_url, files.key_file, credentials=lambda: Credentials("ivan", PASSWORDS["ivan"])
    )
    yield kept
    kept.close()


def _statements(backend: LocalBackend) -> list[str]:
    seen: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(backend.store.engine, "before_cursor_execute", spy)
    return seen


def _randomize(backend: LocalBackend, participant: str) -> None:
    backend.randomize(
        participant, "WAW", {}, dict(ELIGIBLE), FOUR_DAY0, signature=signature("ivan", "randomize")
    )


@pytest.mark.parametrize("first", [True, False], ids=["fresh login", "kept login"])
def test_the_audit_head_is_locked_before_the_stratum(backend: LocalBackend, first: bool) -> None:
    if not first:
        _randomize(backend, "P-000")
    seen = _statements(backend)
    _randomize(backend, "P-001")
    stratum = next(i for i, s in enumerate(seen) if s.startswith("SELECT strata.id"))
    head = next(i for i, s in enumerate(seen) if "FROM audit_head" in s)
    assert head < stratum, seen
    # the head is read (and locked) once, then moved by each event
    assert sum("FROM audit_head" in s for s in seen) == 1
    assert sum(s.startswith("UPDATE audit_head") for s in seen) == (2 if first else 1)


def test_the_login_is_recorded_once_and_just_before_the_action(
    backend: LocalBackend, trial_with_list: TrialFiles
) -> None:
    before = len(audit_rows(trial_with_list.db_url))
    _randomize(backend, "P-001")
    _randomize(backend, "P-002")
    events = audit_rows(trial_with_list.db_url)[before:]
    assert [(e["action"], e["subject"]) for e in events] == [
        ("auth.login", "randomize"),
        ("randomize", "P-001"),
        ("randomize", "P-002"),
    ]
    # the rows the randomization wrote are recorded by its own event, not by the login's
    assert events[0]["rows"] is None
    assert set(events[1]["rows"]) == {"kits", "participants", "strata"}
