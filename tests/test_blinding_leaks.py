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
from datetime import timedelta
from typing import Any

import pytest
from click.testing import Result

from tests.support.assertions import assert_error, assert_no_arm, assert_ok
from tests.support.blinded_path import (
    FOUR_DAY0,
    anonymous,
    live_kit,
    one_per_arm,
    participant_arms,
)
from tests.support.database import audit_rows
from tests.support.exosome import ARM_LABELS, DESIGN, answer_args, arm_words_in
from tests.support.trial import Run, TrialFiles, build_trial, scratch_trial

DAY0 = FOUR_DAY0


def on(offset: int) -> str:
    return (DAY0 + timedelta(days=offset)).isoformat()


@dataclass
class LeakTrial:
    """The module's trial and every blinded output collected from it."""

    files: TrialFiles
    run: Run
    by_arm: dict[str, str]
    outputs: dict[str, tuple[int, Result]]


# (name, user, argv builder, expected exit code); argv may use the trial's facts
Case = tuple[str, str, Callable[["Facts"], tuple[str, ...]], int]


@dataclass
class Facts:
    """Participant ids and kit codes the commands below refer to."""

    first: str
    second: str
    kit: str
    voided: str
    note: str
    public_key: str
    out: str
    dummy_out: str


INVESTIGATOR: list[Case] = [
    (
        "randomize",
        "ivan",
        lambda f: (
            "randomize",
            "P-101",
            "--site",
            "WAW",
            *answer_args(),
            "--date",
            DAY0.isoformat(),
        ),
        0,
    ),
    (
        "randomize-json",
        "ivan",
        lambda f: (
            "randomize",
            "P-102",
            "--site",
            "WAW",
            *answer_args(),
            "--date",
            DAY0.isoformat(),
            "--json",
        ),
        0,
    ),
    (
        "randomize-twice",
        "ivan",
        lambda f: (
            "randomize",
            f.first,
            "--site",
            "WAW",
            *answer_args(),
            "--date",
            DAY0.isoformat(),
        ),
        1,
    ),
    (
        "randomize-ineligible",
        "ivan",
        lambda f: (
            "randomize",
            "P-103",
            "--site",
            "WAW",
            *answer_args(edss="9"),
            "--date",
            DAY0.isoformat(),
        ),
        1,
    ),
    (
        "randomize-bad-answer",
        "ivan",
        lambda f: ("randomize", "P-104", "--site", "WAW", *answer_args(age="abc")),
        2,
    ),
    (
        "kit-request",
        "ivan",
        lambda f: ("kit", "request", f.first, "--visit", "2", "--date", on(84)),
        0,
    ),
    (
        "kit-request-repeat-json",
        "ivan",
        lambda f: ("kit", "request", f.first, "--visit", "1", "--json"),
        0,
    ),
    (
        "kit-request-out-of-order",
        "ivan",
        lambda f: ("kit", "request", f.second, "--visit", "3", "--date", on(90)),
        1,
    ),
    (
        "kit-request-outside-window",
        "ivan",
        lambda f: ("kit", "request", f.second, "--visit", "2", "--date", on(95)),
        1,
    ),
    (
        "kit-request-override-json",
        "ivan",
        lambda f: (
            "kit",
            "request",
            f.second,
            "--visit",
            "2",
            "--date",
            on(95),
            "--override-window",
            "--reason",
            "hospitalised",
            "--json",
        ),
        0,
    ),
    (
        "kit-replace-json",
        "ivan",
        lambda f: ("kit", "replace", f.kit, "--reason", "dropped", "--json"),
        0,
    ),
    (
        "kit-replace-voided",
        "ivan",
        lambda f: ("kit", "replace", f.voided, "--reason", "dropped"),
        1,
    ),
    (
        "kit-replace-typo",
        "ivan",
        lambda f: ("kit", "replace", "0000-0001", "--reason", "dropped"),
        2,
    ),
    ("report", "ivan", lambda f: ("report",), 0),
    ("report-json", "ivan", lambda f: ("report", "--json"), 0),
    ("participant-list", "ivan", lambda f: ("participant", "list"), 0),
    ("participant-list-json", "ivan", lambda f: ("participant", "list", "--json"), 0),
    (
        "emergency-no-reason",
        "ivan",
        lambda f: ("unblind", "emergency", f.first, "--reason", " "),
        2,
    ),
    ("audit-show", "ivan", lambda f: ("audit", "show"), 1),
    ("audit-verify", "ivan", lambda f: ("audit", "verify"), 1),
    ("list-verify", "ivan", lambda f: ("list", "verify"), 1),
    ("unblind-all", "ivan", lambda f: ("unblind", "all", "--out", f.out), 1),
    ("unblind-dummy", "ivan", lambda f: ("unblind", "dummy", "--out", f.dummy_out), 1),
    ("pharmacy-prepare", "ivan", lambda f: ("pharmacy", "prepare", f.kit), 1),
    ("pharmacy-list", "ivan", lambda f: ("pharmacy", "list", "--json"), 1),
]

STATISTICIAN: list[Case] = [
    ("report", "stan", lambda f: ("report",), 0),
    ("report-json", "stan", lambda f: ("report", "--json"), 0),
    ("participant-list", "stan", lambda f: ("participant", "list"), 1),
    ("list-verify", "stan", lambda f: ("list", "verify"), 1),
    ("list-verify-json", "stan", lambda f: ("list", "verify", "--json"), 1),
    ("unblind-all", "stan", lambda f: ("unblind", "all", "--out", f.out), 1),
    (
        "unblind-dummy",
        "stan",
        lambda f: ("unblind", "dummy", "--out", f.dummy_out.replace(".csv", "-stan.csv")),
        0,
    ),
    ("audit-show", "stan", lambda f: ("audit", "show"), 1),
    ("randomize", "stan", lambda f: ("randomize", "P-201", "--site", "WAW", *answer_args()), 1),
    ("kit-request", "stan", lambda f: ("kit", "request", f.first, "--visit", "1"), 1),
    ("emergency", "stan", lambda f: ("unblind", "emergency", f.first, "--reason", "curious"), 1),
    ("pharmacy-list", "stan", lambda f: ("pharmacy", "list"), 1),
]

MONITOR: list[Case] = [
    ("report", "mona", lambda f: ("report",), 0),
    ("report-json", "mona", lambda f: ("report", "--json"), 0),
    ("participant-list", "mona", lambda f: ("participant", "list", "--site", "WAW"), 0),
    ("audit-show", "mona", lambda f: ("audit", "show"), 0),
    ("audit-show-json", "mona", lambda f: ("audit", "show", "--json"), 0),
    ("audit-verify", "mona", lambda f: ("audit", "verify"), 0),
    (
        "audit-verify-checkpoint-json",
        "mona",
        lambda f: (
            "audit",
            "verify",
            "--checkpoint",
            f.note,
            "--public-key",
            f.public_key,
            "--json",
        ),
        0,
    ),
    ("list-verify", "mona", lambda f: ("list", "verify"), 1),
    ("unblind-all", "mona", lambda f: ("unblind", "all", "--out", f.out), 1),
    ("unblind-dummy", "mona", lambda f: ("unblind", "dummy", "--out", f.dummy_out), 1),
    ("emergency", "mona", lambda f: ("unblind", "emergency", f.first, "--reason", "curious"), 1),
    ("randomize", "mona", lambda f: ("randomize", "P-301", "--site", "WAW", *answer_args()), 1),
    ("kit-request", "mona", lambda f: ("kit", "request", f.first, "--visit", "1"), 1),
    ("kit-replace", "mona", lambda f: ("kit", "replace", f.kit, "--reason", "x"), 1),
    ("pharmacy-prepare", "mona", lambda f: ("pharmacy", "prepare", f.kit), 1),
]

CASES = [*INVESTIGATOR, *STATISTICIAN, *MONITOR]


def _key(case: Case) -> str:
    return f"{case[1]}:{case[0]}"


@pytest.fixture(scope="module")
def leak_trial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeakTrial]:
    directory = tmp_path_factory.mktemp("leaks")
    with scratch_trial(directory) as run:
        files = run.files
        build_trial(run, "list")
        by_arm = one_per_arm(run, DAY0)
        first, second = sorted(by_arm.values())[:2]
        # the trail gets every kind of event: replacement, preparation, pharmacy list,
        # an emergency unblinding, a screen failure, refusals of every role
        voided = live_kit(files, second, 1)
        assert_ok(run("kit", "replace", voided, "--reason", "damaged", user="ivan"))
        assert_ok(run("pharmacy", "prepare", live_kit(files, second, 1), user="petra"))
        assert_ok(run("pharmacy", "list", user="petra"))
        assert_ok(
            run(
                "unblind",
                "emergency",
                sorted(by_arm.values())[-1],
                "--reason",
                "serious adverse event",
                user="ivan",
            )
        )
        signing = directory / "qa.pem"
        assert_ok(run("audit", "keygen", "--out", str(signing), user="alice"))
        note = directory / "checkpoint.note"
        checkpoint = run("audit", "checkpoint", "--signing-key", str(signing), user="alice")
        assert_ok(checkpoint)
        note.write_text(checkpoint.stdout, encoding="utf-8")
        facts = Facts(
            first=first,
            second=second,
            kit=live_kit(files, first, 1),
            voided=voided,
            note=str(note),
            public_key=f"{signing}.pub",
            out=str(directory / "export.csv"),
            dummy_out=str(directory / "dummy-export.csv"),
        )
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


REFUSALS: list[tuple[str, Callable[[str], tuple[str, ...]], int]] = [
    (
        "randomize-twice",
        lambda p: ("randomize", p, "--site", "WAW", *answer_args(), "--date", DAY0.isoformat()),
        1,
    ),
    (
        "randomize-twice-ineligible",
        lambda p: (
            "randomize",
            p,
            "--site",
            "WAW",
            *answer_args(edss="8"),
            "--date",
            DAY0.isoformat(),
        ),
        1,
    ),
    ("out-of-order", lambda p: ("kit", "request", p, "--visit", "3", "--date", on(84)), 1),
    ("outside-window", lambda p: ("kit", "request", p, "--visit", "2", "--date", on(70)), 1),
    ("visit-5", lambda p: ("kit", "request", p, "--visit", "5"), 2),
    ("empty-reason", lambda p: ("unblind", "emergency", p, "--reason", ""), 2),
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
