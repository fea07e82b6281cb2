"""No arm reaches a blinded role through the remote CLI, and no refusal differs between arms.

The local matrix of tests/test_blinding_leaks.py (every command a blinded role
may run, and the ones it may not, as text and as JSON) runs again here with
``--server`` against a live trial server, together with what only the remote
CLI has (login, a saved token, logout, changing one's own password). Refusals
are then compared between two participants in different arms, whose arms are
read as the key holder: the same exit code, the same output, the same audit
record, and over the API the same status, headers and body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result

from randomizer.signatures import MEANINGS
from tests.backends.live import live_server
from tests.support.assertions import assert_error, assert_no_arm, assert_ok
from tests.support.blinded_path import live_kit, participant_arms
from tests.support.database import audit_rows
from tests.support.exosome import DESIGN, arm_words_in
from tests.support.leaks import CASES, REFUSALS, on, prepare
from tests.support.remote import RemoteRun
from tests.support.trial import PASSWORDS, Run, build_trial, scratch_trial

BLINDED = ("ivan", "mona", "stan")
"""The blinded roles' users: investigator, monitor, statistician (no lock in this module)."""


@dataclass
class RemoteLeakTrial:
    """The module's trial, its server and every blinded output collected through it."""

    run: Run
    remote: RemoteRun
    outputs: dict[str, tuple[int, Result]]


def _key(name: str, user: str) -> str:
    return f"{user}:{name}"


REMOTE_ONLY = [
    (name, user) for user in BLINDED for name in ("login", "report-with-token", "logout", "passwd")
]
"""What only the remote CLI has, run by each blinded user in this order."""


@pytest.fixture(scope="module")
def remote_leak_trial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteLeakTrial]:
    directory = tmp_path_factory.mktemp("remote-leaks")
    with scratch_trial(directory) as run:
        build_trial(run, "list")
        with live_server(run.files.db_url, run.files.key_file) as url:
            yield _collect(run, url, directory)


def _collect(run: Run, url: str, directory: Path) -> RemoteLeakTrial:
    """Prepare the trial through the server, then run every blinded command through it."""
    remote = RemoteRun(url, directory / "state")
    facts, by_arm = prepare(run, remote, directory)
    outputs: dict[str, tuple[int, Result]] = {}
    for name, user, argv, code in CASES:
        outputs[_key(name, user)] = (code, remote(*argv(facts), user=user))
    for name, user in REMOTE_ONLY:
        state = RemoteRun(url, directory / f"state-{user}")
        if name == "login":
            result = state("login", user=user)
        elif name == "passwd":
            result = state(
                "user", "passwd", "--password-stdin", user=user, input=PASSWORDS[user] + "-new\n"
            )
        else:
            result = state("report" if name.startswith("report") else name)
        outputs[_key(name, user)] = (0, result)
    return RemoteLeakTrial(run=run, remote=remote, outputs=outputs)


KEYS = [_key(name, user) for name, user, _, _ in CASES] + [
    _key(name, user) for name, user in REMOTE_ONLY
]


@pytest.mark.parametrize("key", KEYS)
def test_no_arm_in_any_blinded_remote_output(remote_leak_trial: RemoteLeakTrial, key: str) -> None:
    code, result = remote_leak_trial.outputs[key]
    if code == 0:
        assert_ok(result)
    else:
        assert_error(result, code)
    assert_no_arm(result, key)
    if key.endswith("json") and code == 0:
        json.loads(result.stdout)


def test_the_remote_trail_has_every_kind_of_event_and_no_arm(
    remote_leak_trial: RemoteLeakTrial,
) -> None:
    shown = json.loads(remote_leak_trial.outputs["mona:audit-show-json"][1].stdout)
    actions = {e["action"] for e in shown}
    assert {
        "randomize",
        "kit.replace",
        "pharmacy.prepare",
        "pharmacy.list",
        "unblind.emergency",
        "audit.checkpoint",
        "auth.login",
        "auth.logout",
    } <= actions
    assert any(e["details"].get("via", {}).get("channel") == "api" for e in shown)
    for event in audit_rows(remote_leak_trial.run.files.db_url):
        assert arm_words_in(json.dumps(event, ensure_ascii=False)) == [], event


# the same refusal, whatever the arm --------------------------------------------------------


def _anonymous(text: str) -> str:
    text = re.sub(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}\b", "<kit>", text)
    text = re.sub(r"\bP-\d{3}\b", "<participant>", text)
    return re.sub(r"\bR-\d{3}\b", "<number>", text)


def _event_shape(event: dict[str, Any]) -> str:
    # the request's token id differs from one login to the next; nothing else may
    details = {k: v for k, v in event["details"].items() if k != "via"}
    return _anonymous(
        json.dumps(
            [event["action"], event["user"], event["subject"], event["reason"], details],
            sort_keys=True,
        )
    )


@dataclass
class Attempt:
    """One command run for a participant of each arm."""

    results: list[Result]
    events: list[list[str]]


@pytest.fixture
def server(run: Run, by_arm: dict[str, str]) -> Iterator[str]:
    """A live server for the trial with P-001..P-004 of ``by_arm``."""
    arms = participant_arms(run.files)
    assert {arms[p] for p in by_arm.values()} == set(DESIGN.arm_ids)
    with live_server(run.files.db_url, run.files.key_file) as url:
        yield url


def _for_each_arm(
    remote: RemoteRun,
    db_url: str,
    by_arm: dict[str, str],
    argv: Callable[[str], tuple[str, ...]],
    user: str = "ivan",
) -> Attempt:
    results, events = [], []
    for arm in DESIGN.arm_ids:
        before = len(audit_rows(db_url))
        results.append(remote(*argv(by_arm[arm]), user=user))
        events.append(
            [
                _event_shape(e)
                for e in audit_rows(db_url)[before:]
                if not e["action"].startswith("auth.")
            ]
        )
    return Attempt(results, events)


def _assert_identical(attempt: Attempt, code: int) -> None:
    first, second = attempt.results
    assert first.exit_code == second.exit_code == code, (first.stderr, second.stderr)
    if code:
        assert_error(first, code)
        assert_error(second, code)
    for result in attempt.results:
        assert_no_arm(result, "a blinded role's answer")
    assert _anonymous(first.stderr) == _anonymous(second.stderr)
    assert _anonymous(first.stdout) == _anonymous(second.stdout)
    assert attempt.events[0] == attempt.events[1]


@pytest.mark.parametrize(("argv", "code"), [pytest.param(a, c, id=n) for n, a, c in REFUSALS])
def test_a_remote_refusal_is_the_same_for_every_arm(
    run: Run,
    by_arm: dict[str, str],
    server: str,
    tmp_path: Path,
    argv: Callable[[str], tuple[str, ...]],
    code: int,
) -> None:
    remote = RemoteRun(server, tmp_path / "state")
    _assert_identical(_for_each_arm(remote, run.files.db_url, by_arm, argv), code)


def test_remote_kit_answers_and_refusals_are_the_same_for_every_arm(
    run: Run, by_arm: dict[str, str], server: str, tmp_path: Path
) -> None:
    """Request, replace, replace the voided kit, run out of spares, other roles, the lock."""
    files, remote = run.files, RemoteRun(server, tmp_path / "state")

    def each(argv: Callable[[str], tuple[str, ...]], code: int, user: str = "ivan") -> Attempt:
        attempt = _for_each_arm(remote, files.db_url, by_arm, argv, user)
        _assert_identical(attempt, code)
        return attempt

    each(lambda p: ("kit", "request", p, "--visit", "2", "--date", on(84)), 0)
    each(lambda p: ("kit", "request", p, "--visit", "2", "--json"), 0)
    voided = {p: live_kit(files, p, 2) for p in by_arm.values()}
    each(lambda p: ("kit", "replace", voided[p], "--reason", "damaged"), 0)
    each(lambda p: ("kit", "replace", voided[p], "--reason", "damaged"), 1)
    each(lambda p: ("kit", "replace", live_kit(files, p, 2), "--reason", "damaged"), 0)
    no_spare = each(lambda p: ("kit", "replace", live_kit(files, p, 2), "--reason", "damaged"), 1)
    assert "no spare kit left to replace" in no_spare.results[0].stderr
    for user in ("mona", "stan"):
        each(lambda p: ("unblind", "emergency", p, "--reason", "curious"), 1, user)
        each(lambda p: ("kit", "request", p, "--visit", "3", "--date", on(168)), 1, user)
        each(lambda p: ("kit", "replace", live_kit(files, p, 1), "--reason", "x"), 1, user)
        each(lambda p: ("pharmacy", "prepare", live_kit(files, p, 1)), 1, user)
    each(lambda p: ("pharmacy", "prepare", live_kit(files, p, 1)), 1)
    run.ok("lock", "--reason", "end", user="alice")
    each(lambda p: ("kit", "request", p, "--visit", "3", "--date", on(168)), 1)
    each(lambda p: ("kit", "replace", live_kit(files, p, 1), "--reason", "damaged"), 1)


def test_api_refusals_are_the_same_for_every_arm(
    run: Run, by_arm: dict[str, str], server: str
) -> None:
    """Status, headers and body of a refusal over the wire, whatever the participant's arm."""
    with httpx.Client(base_url=server, timeout=30) as client:

        def token(user: str) -> dict[str, str]:
            answer = client.post(
                "/api/v1/auth/token", json={"user": user, "password": PASSWORDS[user]}
            )
            return {"Authorization": f"Bearer {answer.json()['token']}"}

        ivan, mona = token("ivan"), token("mona")

        def signature(user: str, action: str) -> dict[str, str]:
            return {"password": PASSWORDS[user], "meaning": MEANINGS[action]}

        requests: list[Callable[[str], httpx.Response]] = [
            lambda p: client.post(
                f"/api/v1/participants/{p}/kits", headers=ivan, json={"visit": 3, "date": on(84)}
            ),
            lambda p: client.post(
                f"/api/v1/participants/{p}/kits", headers=mona, json={"visit": 2}
            ),
            lambda p: client.post(
                f"/api/v1/participants/{p}/emergency-unblinding",
                headers=mona,
                json={"reason": "curious", "signature": signature("mona", "unblind.emergency")},
            ),
            lambda p: client.post(
                f"/api/v1/kits/{live_kit(run.files, p, 1)}/prepare", headers=ivan
            ),
            lambda p: client.post(
                "/api/v1/participants",
                headers=ivan,
                json={
                    "participant": p,
                    "site": "WAW",
                    "answers": {},
                    "signature": signature("ivan", "randomize"),
                },
            ),
        ]
        for request in requests:
            answers = [request(by_arm[arm]) for arm in DESIGN.arm_ids]
            assert answers[0].status_code == answers[1].status_code >= 400
            headers = [{k: v for k, v in a.headers.items() if k != "date"} for a in answers]
            assert headers[0] == headers[1]
            assert _anonymous(answers[0].text) == _anonymous(answers[1].text)
            assert not arm_words_in(answers[0].text)
