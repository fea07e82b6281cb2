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

import pytest

from randomizer import rows
from randomizer.access import hash_password
from tests.support.assertions import assert_error, assert_no_arm
from tests.support.blinded_path import days_ago, participant_arms, randomize
from tests.support.database import audit_rows, execute, postgres_url
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
    assert text.startswith(f"Database verified: {report['rows']} rows in 7 tables, ")
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


# participants, slots, kits ----------------------------------------------------------------


def _swap_slots(files: TrialFiles, first: str, second: str) -> tuple[int, int]:
    """Swap two participants' slots in SQL (through a free slot: slot_id is unique)."""
    [(a, slot_a)] = execute(
        files.db_url, "SELECT id, slot_id FROM participants WHERE code = :c", c=first
    )
    [(b, slot_b)] = execute(
        files.db_url, "SELECT id, slot_id FROM participants WHERE code = :c", c=second
    )
    [(free,)] = execute(files.db_url, "SELECT max(id) FROM slots")
    execute(
        files.db_url,
        f"UPDATE participants SET slot_id = {free} WHERE id = {a}",
        f"UPDATE participants SET slot_id = {slot_a} WHERE id = {b}",
        f"UPDATE participants SET slot_id = {slot_b} WHERE id = {a}",
    )
    return a, b


def test_a_slot_swap_is_refused_for_both_arms_alike(
    by_arm: dict[str, str], run: Run, trial_files: TrialFiles
) -> None:
    files = trial_files
    first, second = sorted(by_arm.values())
    a, b = _swap_slots(files, first, second)
    messages = []
    for participant, row in ((first, a), (second, b)):
        result = run("unblind", "emergency", participant, "--reason", "anaphylaxis", user="ivan")
        assert_no_arm(result, inputs=[participant])
        messages.append(assert_error(result, 1).replace(f"row {row} ", "row N "))
        assert _last_refusal(files)["details"]["command"] == "unblind.emergency"
    assert messages[0] == messages[1] == integrity_refusal("participants", "N")
    assert execute(
        files.db_url, "SELECT count(*) FROM participants WHERE emergency_unblinded_at IS NOT NULL"
    ) == [(0,)]
    # the honest path: a participant whose row is intact is unblinded
    others = sorted(set(participant_arms(files)) - {first, second})
    run.ok("unblind", "emergency", others[0], "--reason", "anaphylaxis", user="ivan")
    # the final export refuses to name the wrong arms
    run.ok("lock", "--reason", "end of trial", user=ADMIN)
    out = files.directory / "final.csv"
    _assert_refused(run, files, "participants", a, "unblind", "all", "--out", str(out), user="stan")
    assert not out.exists()
    assert _verify(run)["problems"] == [
        f"participants row {a}: its MAC does not match (changed without the key)",
        f"participants row {b}: its MAC does not match (changed without the key)",
    ]


_LAST_READ = {
    # the export reads the issued kits first (by visit, then id), then the participants
    # joined to their slots in export order: the last row read of each table
    "kits": "SELECT id FROM kits WHERE participant_id IS NOT NULL ORDER BY visit DESC, id DESC",
    "participants": "SELECT id FROM participants ORDER BY stratum_id DESC, "
    "randomization_number DESC",
    "slots": "SELECT slot_id FROM participants ORDER BY stratum_id DESC, randomization_number DESC",
}
_TAMPER = {
    "kits": "UPDATE kits SET prepared_by = 'mallory' WHERE id = {row}",
    "participants": "UPDATE participants SET randomized_by = 'mallory' WHERE id = {row}",
    "slots": "UPDATE slots SET sequence = sequence + 100000 WHERE id = {row}",
}


@pytest.mark.parametrize("table", sorted(_LAST_READ))
def test_a_broken_last_row_leaves_no_export_file(
    by_arm: dict[str, str],
    run: Run,
    trial_files: TrialFiles,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The export checks each row as it reads it: a broken row read last, once every other
    row is written to the files, still refuses and leaves no file (not even a part)."""
    files = trial_files
    # one row a batch: every row before the broken one is written before it is read
    monkeypatch.setattr(rows, "DRIVER_BATCH", 1)
    run.ok("lock", "--reason", "end of trial", user=ADMIN)
    row = execute(files.db_url, _LAST_READ[table])[0][0]
    execute(files.db_url, _TAMPER[table].format(row=row))
    out_dir = files.directory / "export"
    out_dir.mkdir()
    out = out_dir / "final.csv"
    _assert_refused(run, files, table, row, "unblind", "all", "--out", str(out), user="stan")
    assert list(out_dir.iterdir()) == []
    assert not [e for e in audit_rows(files.db_url) if e["action"] == "unblind.all"]


def test_a_kit_moved_to_another_slot_is_refused(trial_with_list: TrialFiles, run: Run) -> None:
    files = trial_with_list
    [(slot_1,), (slot_2,)] = execute(files.db_url, "SELECT id FROM slots ORDER BY id LIMIT 2")
    [(kit_1,)] = execute(
        files.db_url, f"SELECT id FROM kits WHERE slot_id = {slot_1} AND visit = 1"
    )
    [(kit_2,)] = execute(
        files.db_url, f"SELECT id FROM kits WHERE slot_id = {slot_2} AND visit = 1"
    )
    execute(
        files.db_url,
        f"UPDATE kits SET slot_id = {slot_2} WHERE id = {kit_1}",
        f"UPDATE kits SET slot_id = {slot_1} WHERE id = {kit_2}",
    )
    # the first randomization takes slot 1, whose visit-1 kit is now slot 2's
    _assert_refused(
        run,
        files,
        "kits",
        kit_2,
        "randomize",
        "P-001",
        "--site",
        "WAW",
        *answer_args(age="40"),
        user="ivan",
    )
    assert execute(files.db_url, "SELECT count(*) FROM participants") == [(0,)]
    assert execute(files.db_url, "SELECT next_sequence FROM strata") == [(1,)]
    assert _verify(run)["problems"] == [
        f"kits row {kit_1}: its MAC does not match (changed without the key)",
        f"kits row {kit_2}: its MAC does not match (changed without the key)",
        # whether the two kits hold the same arm is not told
        "allocation list: not checked, rows it is stored in are broken",
    ]
    # put back, the honest path randomizes
    execute(
        files.db_url,
        f"UPDATE kits SET slot_id = {slot_1} WHERE id = {kit_1}",
        f"UPDATE kits SET slot_id = {slot_2} WHERE id = {kit_2}",
    )
    randomize(run, "P-001", days_ago(3))
    assert _verify(run)["ok"] is True


# rows put back whole: found through the trail --------------------------------------------


def test_a_deleted_participant_is_found(
    by_arm: dict[str, str], run: Run, trial_files: TrialFiles
) -> None:
    files = trial_files
    row = _id(files, "participants", "code = 'P-002'")
    statements = [f"DELETE FROM participants WHERE id = {row}"]
    if postgres_url() is not None:  # a superuser switching the foreign keys off
        statements.insert(0, "SET LOCAL session_replication_role = replica")
    execute(files.db_url, *statements)
    # every row left passes its own MAC: the randomizations go on
    randomize(run, "P-005", days_ago(3))
    report = _verify(run)
    assert report["problems"] == [
        f"participants row {row}: missing (the audit trail records it written)"
    ]


def test_old_rows_put_back_are_found(
    by_arm: dict[str, str], run: Run, trial_files: TrialFiles
) -> None:
    files = trial_files
    participant = sorted(by_arm.values())[0]
    row = _id(files, "participants", "code = :c", c=participant)
    [old] = execute(
        files.db_url,
        "SELECT emergency_unblinded_at, emergency_unblinded_by, row_mac FROM participants "
        f"WHERE id = {row}",
    )
    [(stratum, sequence, stratum_mac)] = execute(
        files.db_url, "SELECT id, next_sequence, row_mac FROM strata"
    )
    run.ok("unblind", "emergency", participant, "--reason", "anaphylaxis", user="ivan")
    randomize(run, "P-005", days_ago(3))
    # the unblinding hidden from the export, the stratum's counter rolled back: old rows,
    # each with the MAC it had then
    execute(
        files.db_url,
        "UPDATE participants SET emergency_unblinded_at = :at, emergency_unblinded_by = :by, "
        f"row_mac = :mac WHERE id = {row}",
        "UPDATE strata SET next_sequence = :seq, row_mac = :smac WHERE id = :stratum",
        at=old[0],
        by=old[1],
        mac=old[2],
        seq=sequence,
        smac=stratum_mac,
        stratum=stratum,
    )
    report = _verify(run)
    old_copy = "not the version the audit trail records last (an old copy of the row?)"
    assert report["problems"] == [
        f"strata row {stratum}: {old_copy}",
        f"participants row {row}: {old_copy}",
        "allocation list: not checked, rows it is stored in are broken",
    ]


def test_a_cut_tail_with_its_head_rolled_back_is_found_only_by_a_signed_checkpoint(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    randomize(run, "P-001", days_ago(3))
    private = files.directory / "qa.pem"
    run.ok("audit", "keygen", "--out", str(private))
    note = files.directory / "head.note"
    note.write_text(
        run.ok("audit", "checkpoint", "--signing-key", str(private), user=ADMIN).stdout,
        encoding="utf-8",
    )
    [(checkpoint,)] = execute(files.db_url, "SELECT max(seq) FROM audit_events")
    run.ok("report", user="stan")
    run.ok("list", "status", user="mona")

    def cut(keep: int) -> None:
        [(mac,)] = execute(files.db_url, f"SELECT mac FROM audit_events WHERE seq = {keep}")
        statements = [
            f"DELETE FROM audit_events WHERE seq > {keep}",
            f"UPDATE audit_head SET seq = {keep}, mac = '{mac}'",
        ]
        if postgres_url() is not None:  # a superuser switching the append-only trigger off
            statements = [
                "ALTER TABLE audit_events DISABLE TRIGGER USER",
                *statements,
                "ALTER TABLE audit_events ENABLE TRIGGER USER",
            ]
        execute(files.db_url, *statements)

    # events that wrote no rows, cut back to before the checkpoint: nothing in the
    # database tells; the signed note kept elsewhere does
    cut(checkpoint - 2)
    assert _verify(run)["ok"] is True
    result = run(
        "verify", "--checkpoint", str(note), "--public-key", f"{private}.pub", "--json", user="mona"
    )
    assert_error(result, 1, "the database failed verification")
    [problem] = json.loads(result.stdout)["problems"]
    assert "signed checkpoint" in problem

    # a cut that takes a randomization with it leaves its rows behind: found without a note
    [(before,)] = execute(files.db_url, "SELECT max(seq) FROM audit_events")
    randomize(run, "P-002", days_ago(3))
    cut(before)
    problems = _verify(run)["problems"]
    assert (
        "participants: the rows differ from those the audit trail records "
        "(2 in the database, 1 recorded)"
    ) in problems
