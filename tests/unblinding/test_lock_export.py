"""Database lock and the statistician's full unblinding export (issue 4, item 5)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import stat
from datetime import timedelta

import pytest

from randomizer.commands.unblinding import ANALYSIS_FILES
from randomizer.errors import AuditError
from randomizer.signatures import MEANINGS
from tests.support.assertions import assert_error, assert_no_arm
from tests.support.blinded_path import (
    FOUR_DAY0,
    fail_audit_for,
    live_kit,
    participant_arms,
    refused,
)
from tests.support.database import audit_rows, dump_database, execute, without_audit
from tests.support.exosome import DESIGN, answer_args
from tests.support.exports import analysis_text
from tests.support.trial import Run, TrialFiles, open_trial_vault

COLUMNS = [
    "participant",
    "site",
    "stratum",
    "randomization_number",
    "arm",
    "arm_label",
    "randomized_at",
    "kits",
    "emergency_unblinded",
    "randomized_by",
    "status",
    "voided_at",
    "voided_by",
    "void_reason",
    "randomization_signature_meaning",
    "void_signature_meaning",
    "dummy",
]
DAY0 = FOUR_DAY0
VISIT_2 = (DAY0 + timedelta(days=84)).isoformat()
LOCK_REASON = "last participant completed week 48; data cleaned"


class _SignedAt:
    """Equal to any UTC time text: the moment of signing, which the test cannot know."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and UTC_TEXT.fullmatch(other) is not None

    def __hash__(self) -> int:
        return 0


SIGNED_AT = _SignedAt()
UTC_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
def trial(run: Run, by_arm: dict[str, str]) -> TrialFiles:
    """The trial of ``by_arm``."""
    return run.files


@pytest.fixture
def locked(run: Run, by_arm: dict[str, str]) -> dict[str, str]:
    """The same trial, locked by alice."""
    run.ok("lock", "--reason", LOCK_REASON, user="alice")
    return by_arm


# lock -------------------------------------------------------------------------------------


def test_lock(run: Run, trial: TrialFiles, by_arm: dict[str, str]) -> None:
    result = run.ok("lock", "--reason", f" {LOCK_REASON} ", user="alice")
    assert re.fullmatch(
        r"Trial exosome-ms locked at \S+Z by alice with 4 participants\. "
        r"Statisticians may now run 'randomizer unblind all'\.\n",
        result.stdout,
    )
    row = execute(trial.db_url, "SELECT locked_by, lock_reason FROM trial")
    assert row == [("alice", LOCK_REASON)]
    event = audit_rows(trial.db_url)[-1]
    assert (event["action"], event["user"], event["reason"], event["details"]) == (
        "lock",
        "alice",
        LOCK_REASON,
        {
            "participants": 4,
            "signature": {"name": "alice", "at": SIGNED_AT, "meaning": MEANINGS["lock"]},
        },
    )
    refused(
        run,
        "lock",
        "--reason",
        "again",
        user="alice",
        code=1,
        command="lock",
        fragments=("the database is already locked (since ", " by alice)"),
    )


@pytest.mark.parametrize("user", ["ivan", "petra", "stan", "mona"])
def test_only_an_admin_locks(run: Run, by_arm: dict[str, str], user: str) -> None:
    message = refused(run, "lock", "--reason", LOCK_REASON, user=user, code=1, command="lock")
    assert message.endswith(" may not lock the database")


@pytest.mark.parametrize(
    "args", [("--reason", ""), ("--reason", "   "), ()], ids=["empty", "blank", "missing"]
)
def test_lock_needs_a_reason(run: Run, by_arm: dict[str, str], args: tuple[str, ...]) -> None:
    refused(run, "lock", *args, user="alice", code=2)


LOCKED_OUT = [
    pytest.param(
        "ivan",
        ("randomize", "P-005", "--site", "WAW", *answer_args(), "--date", DAY0.isoformat()),
        "randomize",
        "no more randomization",
        id="randomize",
    ),
    pytest.param(
        "ivan",
        ("kit", "request", "{participant}", "--visit", "2", "--date", VISIT_2),
        "kit.request",
        "no more dispensing",
        id="kit-request",
    ),
    pytest.param(
        "ivan",
        ("kit", "replace", "{kit}", "--reason", "dropped"),
        "kit.replace",
        "no more dispensing",
        id="kit-replace",
    ),
    pytest.param(
        "petra",
        ("pharmacy", "prepare", "{kit}"),
        "pharmacy.prepare",
        "no more dispensing",
        id="pharmacy-prepare",
    ),
]


@pytest.mark.parametrize(("user", "argv", "command", "what"), LOCKED_OUT)
def test_after_the_lock_dispensing_is_refused_and_audited(
    run: Run,
    trial: TrialFiles,
    locked: dict[str, str],
    user: str,
    argv: tuple[str, ...],
    command: str,
    what: str,
) -> None:
    participant = sorted(locked.values())[0]
    names = {"{participant}": participant, "{kit}": live_kit(trial, participant, 1)}
    args = [names.get(arg, arg) for arg in argv]
    refused(
        run,
        *args,
        user=user,
        code=1,
        command=command,
        fragments=(f"the database is locked: {what}",),
    )


# unblind all --------------------------------------------------------------------------------


def test_full_unblinding_only_after_the_lock(
    run: Run, trial: TrialFiles, by_arm: dict[str, str]
) -> None:
    out = trial.directory / "early.csv"
    refused(
        run,
        "unblind",
        "all",
        "--out",
        str(out),
        user="stan",
        code=1,
        command="unblind.all",
        fragments=("role statistician may unblind the whole trial only after the database lock",),
    )
    assert not out.exists()


@pytest.mark.parametrize("user", ["alice", "ivan", "petra", "mona"])
def test_only_the_statistician_unblinds_all(
    run: Run, trial: TrialFiles, locked: dict[str, str], user: str
) -> None:
    out = trial.directory / "export.csv"
    message = refused(
        run, "unblind", "all", "--out", str(out), user=user, code=1, command="unblind.all"
    )
    assert message.endswith(" may not unblind the whole trial")
    assert not out.exists()


def test_the_export(run: Run, trial: TrialFiles, by_arm: dict[str, str]) -> None:
    files = trial
    replaced_participant = by_arm[DESIGN.arm_ids[0]]
    unblinded_participant = by_arm[DESIGN.arm_ids[1]]
    old = live_kit(files, replaced_participant, 1)
    run.ok("kit", "replace", old, "--reason", "damaged", user="ivan")
    new = live_kit(files, replaced_participant, 1)
    run.ok("kit", "request", replaced_participant, "--visit", "2", "--date", VISIT_2, user="ivan")
    run.ok("unblind", "emergency", unblinded_participant, "--reason", "rash", user="ivan")
    run.ok("lock", "--reason", LOCK_REASON, user="alice")

    out = files.directory / "final.csv"
    result = run.ok("unblind", "all", "--out", str(out), user="stan")
    data = out.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert result.stdout == (
        f"Wrote 4 participants to {out}\nSHA-256: {digest}\n" + analysis_text(out)
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = data.decode("utf-8")
    assert text.splitlines()[0] == ",".join(COLUMNS)
    rows = list(csv.DictReader(text.splitlines()))
    arms = participant_arms(files)
    assert [r["participant"] for r in rows] == [f"P-{n:03d}" for n in range(1, 5)]
    randomized_at = {
        code: str(at)
        for code, at in execute(files.db_url, "SELECT code, randomized_at FROM participants")
    }
    for n, row in enumerate(rows, start=1):
        p = row["participant"]
        assert (row["site"], row["stratum"], row["randomization_number"]) == (
            "WAW",
            "all",
            f"R-{n:03d}",
        )
        assert (row["arm"], row["arm_label"]) == (arms[p], DESIGN.arm(arms[p]).label)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", row["randomized_at"])
        assert row["randomized_at"][:19] == randomized_at[p][:19].replace(" ", "T")
        assert row["emergency_unblinded"] == ("yes" if p == unblinded_participant else "no")
        assert row["dummy"] == "no"
        expected = f"1:{live_kit(files, p, 1)}"
        if p == replaced_participant:
            expected = f"1:{old}(voided) 1:{new} 2:{live_kit(files, p, 2)}"
        assert row["kits"] == expected
    event = audit_rows(files.db_url)[-1]
    assert (event["action"], event["user"], event["role"]) == (
        "unblind.all",
        "stan",
        "statistician",
    )
    # a keyed MAC of the file, never its plain digest, which arm guesses could match
    mac = open_trial_vault(files).mac(data).hex()
    assert (event["details"]["participants"], event["details"]["file_mac"]) == (4, mac)
    assert set(event["details"]["files_mac"]) == set(ANALYSIS_FILES)
    assert event["details"]["signature"] == {
        "name": "stan",
        "at": SIGNED_AT,
        "meaning": MEANINGS["unblind.all"],
    }
    assert digest not in json.dumps(event)

    again = run.ok(
        "unblind", "all", "--out", str(files.directory / "again.csv"), "--json", user="stan"
    )
    shown = json.loads(again.stdout)
    assert shown.pop("analysis_files") == {
        name: {
            "file": str(files.directory / f"again.{name}"),
            "sha256": hashlib.sha256((files.directory / f"again.{name}").read_bytes()).hexdigest(),
        }
        for name in ANALYSIS_FILES
    }
    assert shown == {
        "file": str(files.directory / "again.csv"),
        "sha256": digest,
        "participants": 4,
    }
    assert (files.directory / "again.csv").read_bytes() == data


def test_the_export_never_overwrites(run: Run, trial: TrialFiles, locked: dict[str, str]) -> None:
    out = trial.directory / "final.csv"
    out.write_text("earlier work\n", encoding="utf-8")
    refused(
        run,
        "unblind",
        "all",
        "--out",
        str(out),
        user="stan",
        code=2,
        fragments=(f"{out} already exists: refusing to overwrite it",),
    )
    assert out.read_text(encoding="utf-8") == "earlier work\n"
    missing = trial.directory / "no-such-dir" / "final.csv"
    refused(
        run,
        "unblind",
        "all",
        "--out",
        str(missing),
        user="stan",
        code=2,
        fragments=(f"cannot create {missing}: No such file or directory",),
    )


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(AuditError("the audit trail could not be written"), id="audit-error"),
        pytest.param(RuntimeError("disk I/O error"), id="unexpected-error"),
    ],
)
def test_an_export_whose_audit_write_fails_reveals_nothing(
    run: Run,
    trial: TrialFiles,
    locked: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
) -> None:
    out = trial.directory / "final.csv"
    before = dump_database(trial.db_url)
    attempted = fail_audit_for(monkeypatch, "unblind.all", error)
    result = run("unblind", "all", "--out", str(out), "--json", user="stan")
    assert "unblind.all" in attempted
    assert_error(result, 1)
    assert result.stdout == ""
    assert_no_arm(result, "failed export")
    assert not out.exists()
    assert list(trial.directory.glob("final.csv*")) == []
    assert list(trial.directory.glob(".final.csv*")) == []  # no temporary file either
    assert without_audit(dump_database(trial.db_url)) == without_audit(before)
    assert [e for e in audit_rows(trial.db_url) if e["action"] == "unblind.all"] == []


def test_the_export_of_a_trial_without_participants(run: Run, trial_with_list: TrialFiles) -> None:
    run.ok("lock", "--reason", "trial stopped before the first participant", user="alice")
    out = trial_with_list.directory / "final.csv"
    result = run.ok("unblind", "all", "--out", str(out), user="stan")
    assert out.read_text(encoding="utf-8") == ",".join(COLUMNS) + "\n"
    assert result.stdout.startswith(f"Wrote 0 participants to {out}\n")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_refused_export_leaves_no_file_and_no_open_descriptor(
    run: Run, trial: TrialFiles, by_arm: dict[str, str]
) -> None:
    """The file is created before the backend is asked; a refusal must close and remove it
    (an in-process caller such as the demo would otherwise run out of descriptors)."""
    out = trial.directory / "early.csv"
    run("report", user="stan")  # warm up: imports and pools opened once
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        assert_error(run("unblind", "all", "--out", str(out), user="stan"), 1)
        assert not out.exists()
    assert len(os.listdir("/proc/self/fd")) <= before
