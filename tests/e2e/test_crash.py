"""SIGKILL in the middle of randomize, kit replace and emergency unblinding.

A test-only fault point (RANDOMIZER_TEST_FAULT) kills the real CLI process
at the named place, as a power cut would. Afterwards the database must be
consistent (no half-assigned slot, no reveal without its audit event, the
chain verifies) and the same command must succeed when retried.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.assertions import assert_ok
from tests.support.database import audit_rows, dump_database, without_audit
from tests.support.exosome import ARM_LABELS, ARMS, answer_args
from tests.support.trial import PASSWORDS, Run, TrialFiles

ROOT = Path(__file__).resolve().parents[2]


def cli_process(files: TrialFiles, user: str, *args: str,
                fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in its own process, optionally armed to die at ``fault``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANDOMIZER_")}
    env["RANDOMIZER_PASSWORD"] = PASSWORDS[user]
    if fault is not None:
        env["RANDOMIZER_TEST_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", "--db", files.db_url,
         "--key-file", str(files.key_file), "--user", user, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


CASES = [
    ("randomize:slot-taken", ("randomize", "P-002", "--site", "WAW", *answer_args())),
    ("randomize:before-commit", ("randomize", "P-002", "--site", "WAW", *answer_args())),
    ("kit.replace:voided", ("kit", "replace", "{kit}", "--reason", "bag damaged")),
    ("kit.replace:before-commit", ("kit", "replace", "{kit}", "--reason", "bag damaged")),
    ("unblind.emergency:opened", ("unblind", "emergency", "P-001", "--reason", "SAE")),
    ("unblind.emergency:before-commit", ("unblind", "emergency", "P-001", "--reason", "SAE")),
]


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "command"), CASES, ids=[c[0] for c in CASES])
def test_a_killed_command_leaves_no_trace_and_succeeds_on_retry(
        run: Run, trial_with_list: TrialFiles, fault: str, command: tuple[str, ...]) -> None:
    first = run.ok("--json", "randomize", "P-001", "--site", "WAW", *answer_args(), user="ivan")
    kit = first.stdout.split('"kit": "')[1][:9]
    args = [a.replace("{kit}", kit) for a in command]
    before = dump_database(trial_with_list.db_url)

    killed = cli_process(trial_with_list, "ivan", *args, fault=fault)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert killed.stdout == ""  # nothing revealed: the process died before printing
    after = dump_database(trial_with_list.db_url)
    assert without_audit(after) == without_audit(before), "a half-done change survived"
    assert after["audit_events"] == before["audit_events"], "an event without its change"
    assert_ok(run("audit", "verify", user="alice"))
    assert_ok(run("list", "verify", user="alice"))

    retried = cli_process(trial_with_list, "ivan", *args)
    assert retried.returncode == 0, retried.stderr
    action = {"randomize": "randomize", "kit": "kit.replace", "unblind": "unblind.emergency"}
    assert audit_rows(trial_with_list.db_url)[-1]["action"] == action[args[0]]
    if args[0] == "unblind":
        assert any(label in retried.stdout for label in ARM_LABELS)
    else:
        assert not any(arm in retried.stdout for arm in (*ARMS, *ARM_LABELS))
    assert_ok(run("audit", "verify", user="alice"))
