"""SIGKILL in the middle of randomize, kit replace and emergency unblinding.

A test-only fault point (RANDOMIZER_TEST_FAULT) kills the real CLI process
at the named place, as a power cut would. Afterwards the database must be
consistent (no half-assigned slot, no reveal without its audit event, the
chain verifies) and the same command must succeed when retried.
"""

from __future__ import annotations

import signal

import pytest

from tests.support.assertions import assert_ok
from tests.support.database import audit_rows, dump_database, without_audit
from tests.support.exosome import ARM_LABELS, ARMS, answer_args
from tests.support.processes import cli_process, finish
from tests.support.trial import Run, TrialFiles

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
    run: Run, trial_with_list: TrialFiles, fault: str, command: tuple[str, ...]
) -> None:
    first = run.ok("--json", "randomize", "P-001", "--site", "WAW", *answer_args(), user="ivan")
    kit = first.stdout.split('"kit": "')[1][:9]
    args = [a.replace("{kit}", kit) for a in command]
    before = dump_database(trial_with_list.db_url)

    files = trial_with_list
    killed = finish(
        cli_process(files.db_url, files.key_file, "ivan", *args, fault=fault), timeout=120
    )

    assert killed.code == -signal.SIGKILL, killed.stderr
    assert killed.stdout == ""  # nothing revealed: the process died before printing
    after = dump_database(trial_with_list.db_url)
    assert without_audit(after) == without_audit(before), "a half-done change survived"
    assert after["audit_events"] == before["audit_events"], "an event without its change"
    assert_ok(run("audit", "verify", user="alice"))
    assert_ok(run("list", "verify", user="alice"))

    retried = finish(cli_process(files.db_url, files.key_file, "ivan", *args), timeout=120)
    assert retried.code == 0, retried.stderr
    action = {"randomize": "randomize", "kit": "kit.replace", "unblind": "unblind.emergency"}
    assert audit_rows(trial_with_list.db_url)[-1]["action"] == action[args[0]]
    if args[0] == "unblind":
        assert any(label in retried.stdout for label in ARM_LABELS)
    else:
        assert not any(arm in retried.stdout for arm in (*ARMS, *ARM_LABELS))
    assert_ok(run("audit", "verify", user="alice"))
