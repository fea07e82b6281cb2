"""No arm reaches a blinded role, and no refusal differs between arms.

A module-scoped trial holds participants of both arms, issued, replaced and
prepared kits and an emergency unblinding, so that the audit trail and the
reports have everything in them. Every command a blinded role may run (and
the ones it may not) is run once, as text and as JSON; each output is checked
for arm ids and labels. The one output that must name an arm, an emergency
unblinding, is checked in tests/unblinding/test_emergency.py. The rules are in
docs/architecture.md sections 2 and 9.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import Result

from tests.support.assertions import assert_error, assert_no_arm, assert_ok
from tests.support.blinded_path import (
    anonymous,
    live_kit,
    participant_arms,
)
from tests.support.database import audit_rows
from tests.support.exosome import ARM_LABELS, DESIGN, arm_words_in
from tests.support.leaks import CASES, REFUSALS, Case, on, prepare
from tests.support.trial import Run, TrialFiles, build_trial, scratch_trial


@dataclass
class LeakTrial:
    """The module's trial and every blinded output collected from it."""

    files: TrialFiles
    run: Run
    by_arm: dict[str, str]
    outputs: dict[str, tuple[int, Result]]


def _key(case: Case) -> str:
    return f"{case[1]}:{case[0]}"


@pytest.fixture(scope="module")
def leak_trial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeakTrial]:
    directory = tmp_path_factory.mktemp("leaks")
    with scratch_trial(directory) as run:
        files = run.files
        build_trial(run, "list")
        facts, by_arm = prepare(run, run, directory)
        outputs: dict[str, tuple[int, Result]] = {}
        for case in CASES:
            name, user, argv, code = case
            outputs[_key(case)] = (code, run(*argv(facts), user=user))
        yield LeakTrial(files=files, run=run, by_arm=by_arm, outputs=outputs)


@pytest.mark.parametrize("key", [_key(c) for c in CASES])
def test_no_arm_in_any_blinded_output(leak_trial: LeakTrial, key: str) -> None:
    code, result = leak_trial.outputs[key]
    if code == 0:
        assert_ok(result)
    else:
        assert_error(result, code)
    assert_no_arm(result, key)
    if key.endswith("json") and code == 0:
        json.loads(result.stdout)


def test_the_leak_check_sees_arms(leak_trial: LeakTrial) -> None:
    """The checker itself: an unblinded output does name arms, a blinded one names none."""
    listing = leak_trial.run("pharmacy", "list", "--json", user="petra")
    assert_ok(listing)
    assert set(arm_words_in(listing.stdout)) >= {a.id for a in DESIGN.arms}
    assert arm_words_in(f"trial {DESIGN.title}: exosome-ms") == []
    assert arm_words_in("PLACEBO") == ["placebo"]
    with pytest.raises(AssertionError, match="stdout names"):
        assert_no_arm(listing, "pharmacy list")
    # an arm word is let pass only where the command's own input holds it
    with pytest.raises(AssertionError, match="'exosome'"):
        assert_no_arm(listing, "pharmacy list", inputs=["saline"])
    assert_no_arm(listing, "pharmacy list", inputs=ARM_LABELS)


def test_the_monitor_reads_a_trail_with_every_kind_of_event(leak_trial: LeakTrial) -> None:
    shown = json.loads(leak_trial.outputs["mona:audit-show-json"][1].stdout)
    actions = {e["action"] for e in shown}
    assert {
        "randomize",
        "kit.request",
        "kit.replace",
        "pharmacy.prepare",
        "pharmacy.list",
        "unblind.emergency",
        "audit.checkpoint",
        "screen_failure",
    } <= actions
    # ...and the refusals of blinded roles recorded after them
    trail = audit_rows(leak_trial.files.db_url)
    assert {"refused"} <= {e["action"] for e in trail}
    for event in trail:
        assert arm_words_in(json.dumps(event, ensure_ascii=False)) == [], event


# the same refusal, whatever the arm --------------------------------------------------------


def _event_shape(event: dict[str, Any]) -> tuple[Any, ...]:
    details = {k: anonymous(v) if isinstance(v, str) else v for k, v in event["details"].items()}
    return (
        event["action"],
        event["user"],
        anonymous(event["subject"]),
        event["reason"],
        json.dumps(details, sort_keys=True),
    )


@dataclass
class Attempt:
    """One command run for a participant of each arm."""

    results: list[Result]
    events: list[list[dict[str, Any]]]


def _for_each_arm(
    run: Run, by_arm: dict[str, str], argv: Callable[[str], tuple[str, ...]], user: str = "ivan"
) -> Attempt:
    results, events = [], []
    for arm in DESIGN.arm_ids:
        before = len(audit_rows(run.files.db_url))
        results.append(run(*argv(by_arm[arm]), user=user))
        events.append(audit_rows(run.files.db_url)[before:])
    return Attempt(results, events)


def _assert_identical(attempt: Attempt, code: int) -> None:
    first, second = attempt.results
    assert first.exit_code == second.exit_code == code, (first.stderr, second.stderr)
    if code:
        assert_error(first, code)
        assert_error(second, code)
    assert anonymous(first.stderr) == anonymous(second.stderr)
    assert anonymous(first.stdout) == anonymous(second.stdout)
    assert [_event_shape(e) for e in attempt.events[0]] == [
        _event_shape(e) for e in attempt.events[1]
    ]


@pytest.mark.parametrize(("argv", "code"), [pytest.param(a, c, id=n) for n, a, c in REFUSALS])
def test_a_refusal_is_the_same_for_every_arm(
    run: Run, by_arm: dict[str, str], argv: Callable[[str], tuple[str, ...]], code: int
) -> None:
    _assert_identical(_for_each_arm(run, by_arm, argv), code)


def test_kit_answers_and_refusals_are_the_same_for_every_arm(
    run: Run, by_arm: dict[str, str]
) -> None:
    """Request, replace, replace the voided kit, run out of spares, then the lock."""
    files = run.files
    _assert_identical(
        _for_each_arm(
            run, by_arm, lambda p: ("kit", "request", p, "--visit", "2", "--date", on(84))
        ),
        0,
    )
    _assert_identical(
        _for_each_arm(run, by_arm, lambda p: ("kit", "request", p, "--visit", "2", "--json")), 0
    )
    voided = {p: live_kit(files, p, 2) for p in by_arm.values()}
    _assert_identical(
        _for_each_arm(run, by_arm, lambda p: ("kit", "replace", voided[p], "--reason", "damaged")),
        0,
    )
    _assert_identical(
        _for_each_arm(run, by_arm, lambda p: ("kit", "replace", voided[p], "--reason", "damaged")),
        1,
    )
    # two more replacements use up what the smallest arm could spare (4 per arm)
    assert DESIGN.spares_per_arm() == 4
    _assert_identical(
        _for_each_arm(
            run, by_arm, lambda p: ("kit", "replace", live_kit(files, p, 2), "--reason", "damaged")
        ),
        0,
    )
    no_spare = _for_each_arm(
        run, by_arm, lambda p: ("kit", "replace", live_kit(files, p, 2), "--reason", "damaged")
    )
    _assert_identical(no_spare, 1)
    assert "no spare kit left to replace" in no_spare.results[0].stderr
    _assert_identical(
        _for_each_arm(
            run, by_arm, lambda p: ("unblind", "emergency", p, "--reason", "curious"), user="mona"
        ),
        1,
    )
    run.ok("lock", "--reason", "end", user="alice")
    _assert_identical(
        _for_each_arm(
            run, by_arm, lambda p: ("kit", "request", p, "--visit", "3", "--date", on(168))
        ),
        1,
    )
    _assert_identical(
        _for_each_arm(
            run, by_arm, lambda p: ("kit", "replace", live_kit(files, p, 1), "--reason", "damaged")
        ),
        1,
    )
    assert participant_arms(files)[by_arm[DESIGN.arm_ids[0]]] == DESIGN.arm_ids[0]
