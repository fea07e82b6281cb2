"""Dates a trial can have (issue 10, item 7).

``randomize`` and ``kit request --override-window`` accepted dates back to
0001-01-01. A randomization dated before the allocation list was generated,
and a visit dated before the participant's randomization, are now refused as
malformed input (exit 2, nothing recorded), through every channel.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials
from randomizer.errors import InvalidInput
from tests.support.blinded_path import FOUR_DAY0, days_ago, refused
from tests.support.blinded_path import randomize as randomize_cli
from tests.support.database import execute
from tests.support.exosome import ELIGIBLE, answer_args
from tests.support.trial import PASSWORDS, Run, TrialFiles, backdate_list, signature

LIST_DAYS_AGO = 10
LONG_AGO = date(1, 1, 1)


@pytest.fixture
def ivan(run: Run) -> Iterator[LocalBackend]:
    """The library's backend for this test's trial, as the investigator."""
    backend = LocalBackend(
        run.files.db_url,
        run.files.key_file,
        credentials=lambda: Credentials("ivan", PASSWORDS["ivan"]),
    )
    yield backend
    backend.close()


@pytest.mark.parametrize(
    "on", [LONG_AGO, days_ago(LIST_DAYS_AGO + 2)], ids=["0001-01-01", "two-days-before"]
)
def test_no_randomization_before_the_list_was_generated(
    run: Run, trial_with_list: TrialFiles, ivan: LocalBackend, on: date
) -> None:
    generated = backdate_list(trial_with_list, timedelta(days=LIST_DAYS_AGO))
    day = generated.astimezone().date().isoformat()  # the local calendar's day
    expected = (
        f"date {on.isoformat()} is before the allocation list was generated "
        f"({day}): no participant can be randomized before it"
    )
    message = refused(
        run,
        "randomize",
        "P-001",
        "--site",
        "WAW",
        *answer_args(),
        "--date",
        on.isoformat(),
        user="ivan",
        code=2,
    )
    assert message == expected
    with pytest.raises(InvalidInput) as refusal:
        ivan.randomize(
            "P-001", "WAW", {}, dict(ELIGIBLE), on, signature=signature("ivan", "randomize")
        )
    assert str(refusal.value) == expected
    assert "--" not in expected
    assert execute(trial_with_list.db_url, "SELECT count(*) FROM participants") == [(0,)]


def test_the_day_the_list_was_generated_is_allowed(
    run: Run, trial_with_list: TrialFiles, ivan: LocalBackend
) -> None:
    backdate_list(trial_with_list, timedelta(days=LIST_DAYS_AGO))
    randomize_cli(run, "P-001", days_ago(LIST_DAYS_AGO))
    assert (
        ivan.randomize(
            "P-002",
            "WAW",
            {},
            dict(ELIGIBLE),
            days_ago(LIST_DAYS_AGO),
            signature=signature("ivan", "randomize"),
        ).randomization_number
        == "R-002"
    )


@pytest.mark.parametrize(
    ("visit", "on"),
    [(2, LONG_AGO), (2, FOUR_DAY0 - timedelta(days=1)), (1, FOUR_DAY0 - timedelta(days=1))],
    ids=["visit-2-0001-01-01", "visit-2-day-before", "visit-1-day-before"],
)
def test_no_visit_before_randomization(
    run: Run, by_arm: dict[str, str], ivan: LocalBackend, visit: int, on: date
) -> None:
    expected = (
        f"date {on.isoformat()} is before P-001 was randomized "
        f"({FOUR_DAY0.isoformat()}): no visit comes before randomization"
    )
    message = refused(
        run,
        "kit",
        "request",
        "P-001",
        "--visit",
        str(visit),
        "--date",
        on.isoformat(),
        "--override-window",
        "--reason",
        "came early",
        user="ivan",
        code=2,
    )
    assert message == expected
    with pytest.raises(InvalidInput) as refusal:
        ivan.request_kit("p-001", visit, on, "came early")
    assert str(refusal.value) == expected
    assert "--" not in expected
