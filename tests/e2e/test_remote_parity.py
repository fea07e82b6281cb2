"""The same command gives the same output, exit code and audit record locally and remotely.

Two identical trials (on SQLite, copies of one template; on PostgreSQL two
built alike, so kit codes, the list's length and the arms differ and are
normalised where they show): one driven in-process
with the key file and database, the other through a live trial server with
``--server``. The commands run in the same order on both, so their states
stay in step: successes, a refusal of each class (401, 403, 404, 409,
400/422) and the inputs that the API's own field bounds used to answer
differently (long values, a ``/`` or ``..`` in a path identifier, a visit
number past 1000, an overlong password).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from tests.backends.live import live_server
from tests.support.assertions import describe
from tests.support.blinded_path import KIT_CODE, days_ago
from tests.support.database import audit_rows, new_events, scratch_db_url
from tests.support.exosome import answer_args
from tests.support.remote import RemoteRun
from tests.support.trial import Run, TrialFiles, TrialTemplates

DAY0 = days_ago(120).isoformat()
WEEK12 = (days_ago(120) + timedelta(days=84)).isoformat()
TOO_EARLY = (days_ago(120) + timedelta(days=30)).isoformat()

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
DIGEST = re.compile(r"\b[0-9a-f]{64}\b")
"""A SHA-256 or MAC: of an export whose times differ, or of a list generated apart."""


def _eligible(participant: str, **overrides: str) -> tuple[str, ...]:
    return ("randomize", participant, "--site", "WAW", *answer_args(**overrides), "--date", DAY0)


CASES: list[tuple[str, str, str | None, tuple[str, ...], int]] = [
    # (case, user, password (None: the user's own), arguments, exit code)
    ("randomize", "ivan", None, _eligible("P-001"), 0),
    ("randomize-json", "ivan", None, ("--json", *_eligible("P-002")), 0),
    ("kit-request", "ivan", None, ("kit", "request", "P-001", "--visit", "2", "--date", WEEK12), 0),
    (
        "kit-request-repeat",
        "ivan",
        None,
        ("kit", "request", "P-001", "--visit", "2", "--date", WEEK12),
        0,
    ),
    (
        "kit-request-repeat-json",
        "ivan",
        None,
        ("kit", "request", "P-001", "--visit", "2", "--date", WEEK12, "--json"),
        0,
    ),
    ("kit-replace", "ivan", None, ("kit", "replace", "{kit}", "--reason", "bag punctured"), 0),
    ("report", "mona", None, ("report",), 0),
    ("401-wrong-password", "ivan", "not-ivans-password", ("report",), 1),
    ("403-role", "mona", None, _eligible("P-003"), 1),
    ("401-unknown-user", "nobody", "not-anyones-password", ("report",), 1),
    ("403-pharmacy", "ivan", None, ("pharmacy", "list"), 1),
    ("403-before-lock", "stan", None, ("unblind", "all", "--out", "{dir}/all.csv"), 1),
    ("404-participant", "ivan", None, ("kit", "request", "P-404", "--visit", "2"), 1),
    ("404-kit", "ivan", None, ("kit", "replace", "0000-0000", "--reason", "lost"), 1),
    ("404-user", "alice", None, ("user", "disable", "nobody", "--reason", "left"), 1),
    ("409-randomized", "ivan", None, _eligible("P-001"), 1),
    ("409-ineligible", "ivan", None, _eligible("P-009", age="12"), 1),
    (
        "409-visit-order",
        "ivan",
        None,
        ("kit", "request", "P-001", "--visit", "4", "--date", WEEK12),
        1,
    ),
    (
        "409-window",
        "ivan",
        None,
        ("kit", "request", "P-002", "--visit", "2", "--date", TOO_EARLY),
        1,
    ),
    ("409-list-exists", "alice", None, ("list", "generate"), 1),
    ("400-participant-id", "ivan", None, _eligible("P 1"), 2),
    ("400-unknown-site", "ivan", None, ("randomize", "P-010", "--site", "XXX", *answer_args()), 2),
    (
        "400-missing-answer",
        "ivan",
        None,
        ("randomize", "P-010", "--site", "WAW", "--answer", "age=45"),
        2,
    ),
    ("400-check-character", "ivan", None, ("kit", "replace", "ABCD-EFGH", "--reason", "x"), 2),
    # a "/" or ".." in a path identifier used to miss the route ("no such endpoint", exit 1)
    ("400-slash-in-participant", "ivan", None, ("kit", "request", "P/1", "--visit", "2"), 2),
    ("400-dot-dot-participant", "ivan", None, ("unblind", "emergency", "..", "--reason", "x"), 2),
    ("400-slash-in-code", "petra", None, ("pharmacy", "prepare", "AB/CD"), 2),
    ("404-slash-in-user", "alice", None, ("user", "disable", "a/b", "--reason", "x"), 1),
    # the API's field bounds used to answer these with 422 "malformed request: ..."
    ("422-long-participant", "ivan", None, _eligible("P" * 200), 2),
    ("422-long-site", "ivan", None, ("randomize", "P-011", "--site", "W" * 200, *answer_args()), 2),
    ("422-long-answer", "ivan", None, _eligible("P-011", age="4" * 300), 1),
    ("422-long-code", "ivan", None, ("kit", "replace", "A" * 200, "--reason", "x"), 2),
    ("422-visit-5000", "ivan", None, ("kit", "request", "P-001", "--visit", "5000"), 2),
    ("422-long-participant-wrong-role", "mona", None, _eligible("P" * 200), 1),
    ("422-argument-over-the-bound", "ivan", None, _eligible("P" * 2001), 2),
    ("422-password-over-the-bound", "ivan", "x" * 1025, ("report",), 2),
    ("401-long-user-name", "u" * 200, "not-anyones-password", ("report",), 1),
    ("409-locked-later", "alice", None, ("lock", "--reason", "database lock"), 0),
    ("409-locked", "ivan", None, _eligible("P-012"), 1),
    ("export", "stan", None, ("unblind", "all", "--out", "{dir}/final.csv"), 0),
]


@pytest.fixture
def twin(tmp_path: Path, _templates: TrialTemplates) -> Iterator[TrialFiles]:
    """A second trial like ``trial_with_list`` (a copy of the same template on SQLite)."""
    directory = tmp_path / "twin"
    directory.mkdir()
    with scratch_db_url(directory) as url:
        files = TrialFiles(db_url=url, key_file=directory / "trial.key", directory=directory)
        _templates.stage("list", Run(files))
        yield files


def _normal(text: str) -> str:
    return DIGEST.sub("<digest>", TIME.sub("<time>", KIT_CODE.sub("<kit>", text)))


def _fill(args: tuple[str, ...], previous: Result | None, directory: Path) -> list[str]:
    kit = ""
    if "{kit}" in args:  # the kit code the previous command printed on this side
        assert previous is not None
        kit = KIT_CODE.findall(previous.stdout)[-1]
    return [arg.replace("{kit}", kit).replace("{dir}", str(directory)) for arg in args]


def _comparable(events: list[dict[str, Any]]) -> list[str]:
    """New audit events less logins, times, MACs and the request's channel."""
    kept = []
    for event in events:
        if event["action"].startswith("auth."):
            continue  # a remote command logs in and out; a local one checks the password
        details = {k: v for k, v in event["details"].items() if k != "via"}
        kept.append(
            _normal(
                json.dumps(
                    [
                        event["user"],
                        event["role"],
                        event["action"],
                        event["subject"],
                        event["reason"],
                        details,
                    ],
                    sort_keys=True,
                )
            )
        )
    return kept


def test_local_and_remote_runs_answer_alike(
    run: Run, trial_with_list: TrialFiles, twin: TrialFiles, tmp_path: Path
) -> None:
    with live_server(twin.db_url, twin.key_file) as url:
        remote = RemoteRun(url, tmp_path / "state")
        sides = {"local": tmp_path / "local", "remote": tmp_path / "remote"}
        for directory in sides.values():
            directory.mkdir()
        last: dict[str, Result | None] = {"local": None, "remote": None}
        for case, user, password, args, code in CASES:
            results, trails = {}, {}
            for side, db_url in (("local", trial_with_list.db_url), ("remote", twin.db_url)):
                argv = _fill(args, last[side], sides[side])
                before = audit_rows(db_url)
                invoke = run if side == "local" else remote
                results[side] = invoke(*argv, user=user, password=password)
                trails[side] = _comparable(new_events(before, audit_rows(db_url)))
                last[side] = results[side]
            local, far = results["local"], results["remote"]
            assert local.exit_code == code, f"{case}: {describe(local)}"
            assert far.exit_code == local.exit_code, f"{case}: {describe(far)}"
            for stream in ("stdout", "stderr"):
                texts = {
                    side: _normal(getattr(results[side], stream)).replace(str(sides[side]), "<dir>")
                    for side in sides
                }
                if run.files.db_path is None:  # two lists generated apart: lengths may differ
                    texts = {
                        side: re.sub(r"\navailable +\d+\n", "\navailable <n>\n", text)
                        for side, text in texts.items()
                    }
                assert texts["remote"] == texts["local"], f"{case}: {stream}"
            assert "Traceback" not in far.output, case
            if code:
                assert len(far.stderr.splitlines()) == 1, case
            assert trails["remote"] == trails["local"], case
        exports = {
            side: _normal((directory / "final.csv").read_text(encoding="utf-8"))
            for side, directory in sides.items()
        }
        if run.files.db_path is None:  # two lists generated apart: the arms may differ
            exports = {
                side: re.sub(
                    r",(exosome,MSC-derived exosomes|saline,0\.9% saline "
                    r"\(placebo\)),",
                    ",<arm>,",
                    text,
                )
                for side, text in exports.items()
            }
        assert exports["remote"] == exports["local"]
