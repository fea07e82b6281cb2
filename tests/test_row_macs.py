"""Row MACs (issue 10 item 1): rows changed without the key are refused or found.

Each test is an attack by someone with write access to the database but not the key,
made in SQL against the real database (SQLite, or PostgreSQL with RANDOMIZER_TEST_DB):
the action that reads the row for a decision is refused with the integrity error
(audited, naming the table and row id, never an arm), ``randomizer verify`` names the
row, and the honest path still works. Rows put back whole (a deleted row, an old
version of a row) pass their own MAC; ``verify`` finds them through the audit trail,
which records the rows each event wrote. A cut tail with the head rolled back is found
only with a signed checkpoint note.
"""

from __future__ import annotations

import json
from typing import Any

from randomizer.access import hash_password
from tests.support.assertions import assert_error
from tests.support.blinded_path import days_ago, randomize
from tests.support.database import audit_rows, execute
from tests.support.exosome import answer_args
from tests.support.rows import integrity_refusal
from tests.support.trial import ADMIN, PASSWORDS, Run, TrialFiles


def _id(files: TrialFiles, table: str, where: str, **params: Any) -> Any:
    return execute(files.db_url, f"SELECT id FROM {table} WHERE {where}", **params)[0][0]


def _verify(run: Run, user: str = "mona") -> dict[str, Any]:
    """``randomizer verify --json``: the report, whether it passed or not."""
    result = run("verify", "--json", user=user)
    report: dict[str, Any] = json.loads(result.stdout)
    if report["problems"]:
        assert_error(result, 1, "the database failed verification")
    else:
        assert result.exit_code == 0, result.output
    return report


def _last_refusal(files: TrialFiles) -> dict[str, Any]:
    event = audit_rows(files.db_url)[-1]
    assert event["action"] in ("refused", "auth.failed"), event
    return event


def _assert_refused(
    run: Run, files: TrialFiles, table: str, row: Any, *argv: str, user: str
) -> None:
    """``argv`` as ``user`` is refused naming the row; the refusal joins the trail."""
    before = len(audit_rows(files.db_url))
    result = run(*argv, user=user)
    assert assert_error(result, 1) == integrity_refusal(table, row)
    assert result.stdout == ""
    refusal = _last_refusal(files)
    assert len(audit_rows(files.db_url)) == before + 1
    assert refusal["details"]["message"] == integrity_refusal(table, row).removesuffix(
        " (run 'randomizer verify')"
    )


# the honest database -------------------------------------------------------------------


def test_an_honest_database_verifies(trial_with_list: TrialFiles, run: Run) -> None:
    randomize(run, "P-001", days_ago(3))
    report = _verify(run)
    assert report["ok"] is True and report["problems"] == []
    assert report["list"] == "match"
    tables = {t["table"]: t["rows"] for t in report["tables"]}
    assert tables["participants"] == 1 and tables["trial"] == 1 and tables["users"] == 5
    assert report["rows"] == sum(tables.values())
    text = run.ok("verify", user=ADMIN).stdout
    assert text.startswith(f"Database verified: {report['rows']} rows in 6 tables, ")
    assert text.endswith("audit events, the list matches its seed\n")
    event = audit_rows(trial_with_list.db_url)[-1]
    assert (event["action"], event["details"]["result"]) == ("verify", "ok")


def test_only_an_admin_or_a_monitor_may_verify(trial_with_list: TrialFiles, run: Run) -> None:
    for user, role in (("ivan", "investigator"), ("petra", "pharmacist"), ("stan", "statistician")):
        assert (
            assert_error(run("verify", user=user), 1) == f"role {role} may not verify the database"
        )


# users -----------------------------------------------------------------------------------


def test_a_role_edited_to_admin_is_refused(trial_with_list: TrialFiles, run: Run) -> None:
    files = trial_with_list
    execute(files.db_url, "UPDATE users SET role = 'admin' WHERE name = 'ivan'")
    ivan = _id(files, "users", "name = 'ivan'")
    _assert_refused(run, files, "users", ivan, "user", "list", user="ivan")
    assert _last_refusal(files)["details"]["refusal"] == "integrity"
    _assert_refused(
        run,
        files,
        "users",
        ivan,
        "randomize",
        "P-001",
        "--site",
        "WAW",
        *answer_args(age="40"),
        user="ivan",
    )
    # the honest path: other users carry on
    run.ok("report", user="stan")
    run.ok("list", "status", user="petra")
    report = _verify(run)
    assert report["problems"] == [
        f"users row {ivan}: its MAC does not match (changed without the key)"
    ]


def test_a_user_inserted_with_an_offline_hash_cannot_log_in(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    execute(
        files.db_url,
        "INSERT INTO users (name, role, password_hash, disabled, created_at) "
        "VALUES ('mallory', 'admin', :h, :f, '2026-01-01 00:00:00.000000')",
        h=hash_password("mallory-pw-123456"),
        f=False,
    )
    mallory = _id(files, "users", "name = 'mallory'")
    before = len(audit_rows(files.db_url))
    result = run("user", "list", user="mallory", password="mallory-pw-123456")
    assert assert_error(result, 1) == integrity_refusal("users", mallory)
    [failed] = audit_rows(files.db_url)[before:]
    assert (failed["action"], failed["user"], failed["details"]["refusal"]) == (
        "auth.failed",
        "mallory",
        "integrity",
    )
    assert not [
        e
        for e in audit_rows(files.db_url)
        if e["subject"] == "mallory" and e["action"] == "user.add"
    ]
    run.ok(
        "user",
        "add",
        "zoe",
        "--role",
        "monitor",
        "--password-stdin",
        user=ADMIN,
        input="zoe-pw-123456789\n",
    )
    report = _verify(run)
    assert report["problems"] == [
        f"users row {mallory}: its MAC does not match (changed without the key)"
    ]


def test_a_copied_password_hash_does_not_log_in_as_its_victim(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    execute(
        files.db_url,
        "UPDATE users SET password_hash = (SELECT password_hash FROM users WHERE name = 'ivan') "
        "WHERE name = 'alice'",
    )
    alice = _id(files, "users", "name = 'alice'")
    result = run("user", "list", user=ADMIN, password=PASSWORDS["ivan"])
    assert assert_error(result, 1) == integrity_refusal("users", alice)
    assert _last_refusal(files)["action"] == "auth.failed"
    run.ok("report", user="ivan")
    assert _verify(run)["problems"] == [
        f"users row {alice}: its MAC does not match (changed without the key)"
    ]


# the trial row ---------------------------------------------------------------------------


def test_an_edited_design_is_refused(trial_with_list: TrialFiles, run: Run) -> None:
    files = trial_with_list
    [(design,)] = execute(files.db_url, "SELECT design_toml FROM trial")
    widened = design.replace("min = 18", "min = 5", 1)
    swapped = (
        design.replace('label = "MSC-derived exosomes"', 'label = "X"')
        .replace('label = "0.9% saline (placebo)"', 'label = "MSC-derived exosomes"')
        .replace('label = "X"', 'label = "0.9% saline (placebo)"')
    )
    for edited in (widened, swapped):
        assert edited != design
        execute(files.db_url, "UPDATE trial SET design_toml = :d", d=edited)
        _assert_refused(
            run,
            files,
            "trial",
            "exosome-ms",
            "randomize",
            "P-005",
            "--site",
            "WAW",
            *answer_args(age="5"),
            user="ivan",
        )
        assert execute(files.db_url, "SELECT count(*) FROM participants") == [(0,)]
        assert "trial row exosome-ms: its MAC does not match" in _verify(run)["problems"][0]
    execute(files.db_url, "UPDATE trial SET design_toml = :d", d=design)
    randomize(run, "P-001", days_ago(3))
    assert _verify(run)["ok"] is True


def test_an_undone_lock_is_refused(trial_with_list: TrialFiles, run: Run) -> None:
    files = trial_with_list
    randomize(run, "P-001", days_ago(3))
    run.ok("lock", "--reason", "end of trial", user=ADMIN)
    execute(files.db_url, "UPDATE trial SET locked_at = NULL, locked_by = NULL, lock_reason = NULL")
    _assert_refused(
        run,
        files,
        "trial",
        "exosome-ms",
        "randomize",
        "P-002",
        "--site",
        "WAW",
        *answer_args(age="40"),
        user="ivan",
    )
    assert execute(files.db_url, "SELECT count(*) FROM participants") == [(1,)]
    assert _verify(run)["problems"][0].startswith("trial row exosome-ms: its MAC does not match")
