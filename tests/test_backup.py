"""Online backups and restores.

SQLite: ``randomizer backup --out FILE`` copies a live database while another
process keeps randomizing; ``restore`` brings the copy back, and the audit
chain, a signed checkpoint made before the backup and the allocation list all
verify in it. Refusals: an existing target or backup file, a missing or
tampered backup, a role other than admin. PostgreSQL: both commands refuse and
point to pg_dump, and the documented pg_dump/pg_restore procedure is run and
its result checked the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from randomizer import maintenance
from randomizer.errors import AuditError
from tests.support.assertions import assert_error
from tests.support.database import (
    audit_rows,
    dump_database,
    execute,
    new_events,
    postgres_url,
    scratch_database,
    without_audit,
)
from tests.support.exosome import answer_args
from tests.support.processes import clean_env
from tests.support.trial import ADMIN, PASSWORDS, Run, TrialFiles, write_key_file

ROOT = Path(__file__).resolve().parents[1]
NOT_ADMIN = {
    "ivan": "investigator",
    "petra": "pharmacist",
    "stan": "statistician",
    "mona": "monitor",
}
MAINTAIN = "may not back up, restore or upgrade the database"
PG_MESSAGE = (
    "backup and restore handle SQLite files only; for PostgreSQL use "
    "pg_dump/pg_restore as docs/operations.md describes, then verify the copy's audit "
    "trail and allocation list (run 'randomizer audit verify' and 'randomizer list "
    "verify' on the copy)"
)

# A second process that writes until told to stop: it randomizes P-001..P-020,
# then keeps reading the report (every command appends to the audit trail).
WRITER = """
import sys, time
from pathlib import Path
from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials
from randomizer.signatures import Signature, meaning_of
from tests.support.exosome import ELIGIBLE as answers

db, key, password, stop = sys.argv[1:5]
backend = LocalBackend(db, Path(key), lambda: Credentials("ivan", password))
n = 0
while not Path(stop).exists() and n < 2000:
    n += 1
    if n <= 20:
        backend.randomize(
            f"P-{n:03d}", "WAW", {}, dict(answers),
            signature=Signature(password, meaning_of("randomize")),
        )
    else:
        backend.report()
    print(n, flush=True)
    time.sleep(0.01)
backend.close()
"""


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _leftovers(path: Path) -> list[Path]:
    return [
        p
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal"))
        if p.exists()
    ]


@pytest.fixture
def signing_key(run: Run, trial_with_list: TrialFiles) -> Path:
    """An Ed25519 signing key pair for checkpoints (public key at FILE.pub)."""
    path = trial_with_list.directory / "qa-signing.pem"
    run.ok("audit", "keygen", "--out", str(path))
    return path


def _checkpoint(run: Run, signing_key: Path, name: str) -> Path:
    note = signing_key.with_name(name)
    note.write_text(
        run.ok("audit", "checkpoint", "--signing-key", str(signing_key), user=ADMIN).stdout
    )
    return note


def _verify(run: Run, db: str, note: Path, signing_key: Path) -> None:
    """The copy at ``db`` passes audit verify (with the checkpoint) and list verify."""
    audited = run.ok(
        "audit",
        "verify",
        "--checkpoint",
        str(note),
        "--public-key",
        f"{signing_key}.pub",
        user=ADMIN,
        db=db,
    ).stdout
    assert re.search(r"signed checkpoint at event \d+ holds", audited), audited
    assert "it matches its seed" in run.ok("list", "verify", user=ADMIN, db=db).stdout


# SQLite: backup while another process writes, then restore ---------------------------------


@pytest.fixture
def writer(sqlite_only: None, trial_with_list: TrialFiles) -> Iterator[subprocess.Popen[str]]:
    """The writing process, started; stopped (and reaped) at the end of the test."""
    stop = trial_with_list.directory / "stop-writing"
    env = clean_env(PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            trial_with_list.db_url,
            str(trial_with_list.key_file),
            PASSWORDS["ivan"],
            str(stop),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        stop.touch()
        try:
            process.communicate(timeout=60)  # reaps it and closes the pipes
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _written(process: subprocess.Popen[str], at_least: int) -> int:
    """Read the writer's progress until it has finished ``at_least`` commands."""
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    done = 0
    while done < at_least:
        line = process.stdout.readline()
        assert line, f"the writer stopped early: {process.stderr.read() if process.stderr else ''}"
        done = int(line)
        assert time.monotonic() < deadline
    return done


def test_a_backup_taken_while_another_process_randomizes_restores_and_verifies(
    trial_with_list: TrialFiles, run: Run, signing_key: Path, writer: subprocess.Popen[str]
) -> None:
    note = _checkpoint(run, signing_key, "before-backup.note")
    _written(writer, 5)
    out = trial_with_list.directory / "backup.db"
    result = run.ok("backup", "--out", str(out), user=ADMIN)
    after_backup = _written(writer, 1)
    assert writer.poll() is None, "the writer must still be writing after the backup"
    _written(writer, after_backup + 10)  # and it keeps writing to the live database
    (trial_with_list.directory / "stop-writing").touch()
    _, errors = writer.communicate(timeout=60)
    assert writer.returncode == 0, errors

    # the report names the file, its event count and its digest
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    match = re.fullmatch(
        r"Backup written to (.+) and verified \((\d+) audit events\)\.\n"
        r"SHA-256: ([0-9a-f]{64})\n",
        result.stdout,
    )
    assert match is not None, result.stdout
    assert (match.group(1), match.group(3)) == (str(out), digest)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert _leftovers(out) == [out]  # one self-contained file, no -wal or -shm beside it

    # a consistent cut: the copy is a prefix of the live trail, every participant in it
    # has its randomize event and every randomize event its participant
    copy_url = _sqlite_url(out)
    copied, live = audit_rows(copy_url), audit_rows(trial_with_list.db_url)
    assert len(copied) == int(match.group(2))
    assert 5 < len(copied) < len(live)
    assert copied == live[: len(copied)]
    # the event comes after the copy was verified, so the copy does not hold it; it names
    # the file by its digest and event count
    assert "backup" not in {e["action"] for e in copied}
    [event] = [e for e in live if e["action"] == "backup"]
    assert event["seq"] > len(copied) and event["subject"] == str(out)
    assert event["details"] == {"sha256": digest, "audit_events": len(copied)}
    # the backup's login was recorded before the copy was made
    assert [e for e in live if e["action"] == "auth.login" and e["subject"] == "backup"][
        0
    ] in copied
    participants = {code for (code,) in execute(copy_url, "SELECT code FROM participants")}
    randomized = {e["subject"] for e in copied if e["action"] == "randomize"}
    assert participants == randomized and participants
    kits = execute(copy_url, "SELECT count(*) FROM kits WHERE participant_id IS NOT NULL")
    assert kits == [(len(participants),)]

    # restore into a new database: chain, checkpoint and list verify there
    restored_path = trial_with_list.directory / "restored.db"
    restored = _sqlite_url(restored_path)
    text = run.ok("restore", "--from", str(out), user=ADMIN, db=restored).stdout
    # (the count includes the restore's own login event)
    assert text == (
        f"Restored {out} into {restored_path}: audit trail "
        f"({len(copied) + 1} events) and allocation list verified.\n"
    )
    trail = audit_rows(restored)
    assert trail[: len(copied)] == copied
    assert [
        (e["action"], e["details"].get("result", e["details"].get("sha256")))
        for e in trail[len(copied) :]
    ] == [("auth.login", None), ("list.verify", "match"), ("restore", digest)]
    _verify(run, restored, note, signing_key)
    # the backup itself was not touched by the restore
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest


@pytest.fixture
def backup_file(sqlite_only: None, trial_with_list: TrialFiles, run: Run) -> Path:
    """A backup of the trial with two randomized participants."""
    for participant in ("P-001", "P-002"):
        run.ok("randomize", participant, "--site", "WAW", *answer_args(), user="ivan")
    out = trial_with_list.directory / "backup.db"
    run.ok("backup", "--out", str(out), user=ADMIN)
    return out


def test_restore_refuses_an_existing_target(
    backup_file: Path, trial_with_list: TrialFiles, run: Run
) -> None:
    for target in (trial_with_list.db_path, trial_with_list.directory / "empty.db"):
        assert target is not None
        target.touch()
        before = target.read_bytes()
        assert_error(
            run("restore", "--from", str(backup_file), user=ADMIN, db=_sqlite_url(target)),
            2,
            f"{target} already exists: refusing to overwrite it",
        )
        assert target.read_bytes() == before


def test_restore_refuses_a_missing_backup(
    sqlite_only: None, trial_with_list: TrialFiles, run: Run
) -> None:
    missing = trial_with_list.directory / "no-such-backup.db"
    target = trial_with_list.directory / "restored.db"
    assert_error(
        run("restore", "--from", str(missing), user=ADMIN, db=_sqlite_url(target)),
        2,
        f"backup file {missing} not found",
    )
    assert _leftovers(target) == []


def _flip(value: str | bytes, index: int) -> str | bytes:
    """``value`` with the lowest bit of one character (or byte) flipped."""
    if isinstance(value, bytes):
        return value[:index] + bytes([value[index] ^ 1]) + value[index + 1 :]
    return value[:index] + chr(ord(value[index]) ^ 1) + value[index + 1 :]


def _flip_column(table: str, column: str, where: str, index: int = -1) -> Tamper:
    def tamper(db: sqlite3.Connection) -> None:
        [(key, value)] = db.execute(f"SELECT rowid, {column} FROM {table} WHERE {where}")
        db.execute(
            f"UPDATE {table} SET {column} = ? WHERE rowid = ?",
            (_flip(value, index % len(value)), key),
        )

    return tamper


def _sql(*statements: str) -> Tamper:
    def tamper(db: sqlite3.Connection) -> None:
        for statement in statements:
            assert db.execute(statement).rowcount == 1, statement

    return tamper


Tamper = Callable[[sqlite3.Connection], None]

TAMPERING: dict[str, tuple[Tamper, str]] = {
    "a byte of an event's time": (
        _flip_column("audit_events", "at", "seq = 3", index=3),
        "audit trail broken at event 3: it was altered, inserted or reordered",
    ),
    "a byte of an event's user": (
        _flip_column("audit_events", '"user"', "action = 'randomize' AND subject = 'P-002'"),
        "it was altered",
    ),
    "a byte of an event's details": (
        _flip_column(
            "audit_events", "details", "action = 'randomize' AND subject = 'P-001'", index=-3
        ),
        "audit trail broken",
    ),
    "a byte of a MAC": (
        _flip_column("audit_events", "mac", "seq = 2"),
        "audit trail broken at event 2",
    ),
    "a deleted event": (
        _sql("DELETE FROM audit_events WHERE seq = 4"),
        "audit trail broken at event 4: events are missing or out of order",
    ),
    "a cut tail": (
        _sql("DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)"),
        "audit trail broken",
    ),
    "a byte of a sealed slot": (
        _flip_column("slots", "allocation_sealed", "sequence = 1", index=20),
        # sealed values are authenticated by AES-GCM, not by the row MACs
        "the key file does not open this trial's data",
    ),
    "a byte of a sealed kit": (
        _flip_column("kits", "content_sealed", "id = 7", index=30),
        "the key file does not open this trial's data",
    ),
    "two swapped slots": (
        _sql(
            "UPDATE slots SET sequence = -1 WHERE sequence = 1",
            "UPDATE slots SET sequence = 1 WHERE sequence = 2",
            "UPDATE slots SET sequence = 2 WHERE sequence = -1",
        ),
        "the backup fails verification: slots row 1: its MAC does not match (changed "
        "without the key); slots row 2: its MAC does not match",
    ),
}


def _tampered(backup_file: Path, tamper: Tamper) -> Path:
    copy = backup_file.with_name("tampered.db")
    shutil.copy2(backup_file, copy)
    connection = sqlite3.connect(copy)
    try:
        with connection:
            tamper(connection)
    finally:
        connection.close()
    return copy


@pytest.mark.parametrize("name", list(TAMPERING))
def test_restore_refuses_a_tampered_backup(
    name: str, backup_file: Path, trial_with_list: TrialFiles, run: Run
) -> None:
    tamper, message = TAMPERING[name]
    tampered = _tampered(backup_file, tamper)
    before = tampered.read_bytes()
    target = trial_with_list.directory / "restored.db"
    assert_error(
        run("restore", "--from", str(tampered), user=ADMIN, db=_sqlite_url(target)), 1, message
    )
    assert _leftovers(target) == []
    assert tampered.read_bytes() == before


def test_restore_refuses_a_damaged_file(
    backup_file: Path, trial_with_list: TrialFiles, run: Run
) -> None:
    damaged = backup_file.with_name("damaged.db")
    data = bytearray(backup_file.read_bytes())
    damaged.write_bytes(bytes(data[: len(data) // 2]))
    target = trial_with_list.directory / "restored.db"
    assert_error(
        run("restore", "--from", str(damaged), user=ADMIN, db=_sqlite_url(target)),
        1,
        f"backup file {damaged} is damaged: ",
    )
    assert _leftovers(target) == []
    # not "internal error (DatabaseError) ... report it": one line naming the file
    for name, content in (
        ("notes.txt", b"not a database\n" * 100),
        ("empty.db", b""),
        ("dump.sql", b"SQLite format 2\0" + b"\0" * 100),
    ):
        not_sqlite = backup_file.with_name(name)
        not_sqlite.write_bytes(content)
        assert assert_error(
            run("restore", "--from", str(not_sqlite), user=ADMIN, db=_sqlite_url(target)), 2
        ) == (
            f"backup file {not_sqlite} is not a SQLite database: restore takes a file "
            "written by a randomizer backup"
        )
        assert _leftovers(target) == []


def test_restore_refuses_a_wrong_key_file(
    backup_file: Path, trial_with_list: TrialFiles, run: Run
) -> None:
    other = write_key_file(trial_with_list.directory / "other.key", os.urandom(32))
    target = trial_with_list.directory / "restored.db"
    assert_error(
        run(
            "restore",
            "--from",
            str(backup_file),
            user=ADMIN,
            db=_sqlite_url(target),
            key_file=other,
        ),
        1,
        "the key file does not open this trial: it is not the trial's current key "
        "(was the key rotated?)",
    )
    assert _leftovers(target) == []


def test_backup_refuses_an_existing_file(
    sqlite_only: None, trial_with_list: TrialFiles, run: Run
) -> None:
    out = trial_with_list.directory / "backup.db"
    out.write_bytes(b"an older backup")
    before = dump_database(trial_with_list.db_url)
    assert_error(
        run("backup", "--out", str(out), user=ADMIN),
        2,
        f"{out} already exists: refusing to overwrite a backup",
    )
    assert out.read_bytes() == b"an older backup"
    assert dump_database(trial_with_list.db_url) == before


def _broken_verification(path: Path, trial_key: object) -> int:
    raise AuditError("audit trail broken at event 3: it was altered, inserted or reordered")


def _no_links(source: object, target: object) -> None:
    raise PermissionError(13, "Permission denied")


@pytest.mark.parametrize("stage", ["missing directory", "verification", "naming"])
def test_a_failed_backup_leaves_no_file_and_is_recorded_as_failed(
    sqlite_only: None,
    trial_with_list: TrialFiles,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
) -> None:
    """The event comes last: a backup that fails records ``backup.failed``, never ``backup``."""
    folder = trial_with_list.directory / "backups"
    folder.mkdir()
    out = folder / "b.db"
    if stage == "missing directory":  # the case: events committed, then a failure
        out = folder / "missing-dir" / "b.db"
        message = f"cannot write the backup {out}: No such file or directory"
    elif stage == "verification":
        monkeypatch.setattr(maintenance, "_verified_events", _broken_verification)
        message = "audit trail broken at event 3: it was altered, inserted or reordered"
    else:  # the verified copy cannot be given its name
        monkeypatch.setattr(os, "link", _no_links)
        message = f"cannot write the backup {out}: Permission denied"
    url = trial_with_list.db_url
    before, trail = dump_database(url), audit_rows(url)

    assert assert_error(run("backup", "--out", str(out), user=ADMIN), 1) == message

    assert list(folder.iterdir()) == []  # neither the backup nor its temporary file
    assert without_audit(dump_database(url)) == without_audit(before)
    added = new_events(trail, audit_rows(url))
    assert [(e["action"], e["user"], e["subject"]) for e in added] == [
        ("auth.login", ADMIN, "backup"),
        ("backup.failed", ADMIN, str(out)),
    ]
    assert added[1]["details"] == {"error": message}

    monkeypatch.undo()
    run.ok("backup", "--out", str(folder / "b.db"), user=ADMIN)
    assert [p.name for p in folder.iterdir()] == ["b.db"]


def test_only_an_admin_may_back_up_or_restore(
    backup_file: Path, trial_with_list: TrialFiles, run: Run
) -> None:
    target = trial_with_list.directory / "restored.db"
    for user, role in NOT_ADMIN.items():
        out = trial_with_list.directory / f"{user}.db"
        trail = len(audit_rows(trial_with_list.db_url))
        assert (
            assert_error(run("backup", "--out", str(out), user=user), 1)
            == f"role {role} {MAINTAIN}"
        )
        assert _leftovers(out) == []
        [refusal] = audit_rows(trial_with_list.db_url)[trail:]
        assert (refusal["action"], refusal["user"], refusal["details"]["command"]) == (
            "refused",
            user,
            "backup",
        )

        assert (
            assert_error(
                run("restore", "--from", str(backup_file), user=user, db=_sqlite_url(target)), 1
            )
            == f"role {role} {MAINTAIN}"
        )
        assert _leftovers(target) == []


def test_backup_and_restore_need_a_login(
    backup_file: Path, trial_with_list: TrialFiles, run: Run
) -> None:
    out = trial_with_list.directory / "second.db"
    assert_error(
        run("backup", "--out", str(out), user=ADMIN, password="wrong-password-123"),
        1,
        "login refused for user 'alice'",
    )
    assert _leftovers(out) == []
    target = trial_with_list.directory / "restored.db"
    assert_error(
        run(
            "restore",
            "--from",
            str(backup_file),
            user=ADMIN,
            db=_sqlite_url(target),
            password="wrong-password-123",
        ),
        1,
        "login refused for user 'alice'",
    )
    assert _leftovers(target) == []


def test_a_restored_copy_keeps_working(
    backup_file: Path, trial_with_list: TrialFiles, run: Run
) -> None:
    restored = _sqlite_url(trial_with_list.directory / "restored.db")
    run.ok("restore", "--from", str(backup_file), user=ADMIN, db=restored)
    assert_error(
        run("randomize", "P-001", "--site", "WAW", *answer_args(), user="ivan", db=restored),
        1,
        "P-001 is already randomized",
    )
    run.ok("randomize", "P-003", "--site", "WAW", *answer_args(), user="ivan", db=restored)
    assert "current" in run.ok("db", "status", db=restored).stdout
    assert "Audit trail verified" in run.ok("audit", "verify", user=ADMIN, db=restored).stdout


# PostgreSQL ------------------------------------------------------------------------------


def test_backup_and_restore_refuse_postgresql(
    trial_with_users: TrialFiles, run: Run, is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("backup and restore of PostgreSQL are refused; this run uses SQLite")
    out = trial_with_users.directory / "backup.db"
    before = dump_database(trial_with_users.db_url)
    assert assert_error(run("backup", "--out", str(out), user=ADMIN), 1) == PG_MESSAGE
    assert assert_error(run("restore", "--from", str(out), user=ADMIN), 1) == PG_MESSAGE
    assert not out.exists()
    assert dump_database(trial_with_users.db_url) == before


def _pg_tool(name: str) -> str:
    folder = os.environ.get("PG_TEST_BIN")
    found = (
        str(Path(folder) / name)
        if folder and (Path(folder) / name).exists()
        else shutil.which(name)
    )
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


@pytest.fixture
def second_database(is_postgres: bool) -> Iterator[str]:
    """A new, empty PostgreSQL database to restore into."""
    server = postgres_url()
    if server is None:
        pytest.skip("pg_dump/pg_restore need PostgreSQL; this run uses SQLite")
    with scratch_database(server, "randomizer_restore") as url:
        yield url


def _schema(url: str) -> str:
    """The schema a test URL's search_path names ('public' when it names none)."""
    options = str(make_url(url).query.get("options", ""))
    found = re.search(r"search_path=([^\s,]+)", options)
    return found.group(1) if found else "public"


def _in_schema(url: str, schema: str) -> str:
    return (
        make_url(url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_a_pg_dump_backup_restores_and_verifies(
    trial_with_list: TrialFiles, run: Run, signing_key: Path, second_database: str
) -> None:
    """The procedure of docs/operations.md, run as written."""
    pg_dump, pg_restore = _pg_tool("pg_dump"), _pg_tool("pg_restore")
    for participant in ("P-001", "P-002", "P-003"):
        run.ok("randomize", participant, "--site", "WAW", *answer_args(), user="ivan")
    note = _checkpoint(run, signing_key, "before-dump.note")
    dump = trial_with_list.directory / "trial.dump"
    # (the tests keep each trial in a schema of its own; a real trial lives in 'public')
    schema = _schema(trial_with_list.db_url)
    subprocess.run(
        [
            pg_dump,
            "--format=custom",
            f"--file={dump}",
            f"--schema={schema}",
            _libpq(trial_with_list.db_url),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    run.ok("randomize", "P-004", "--site", "WAW", *answer_args(), user="ivan")  # after the dump
    subprocess.run(
        [
            pg_restore,
            "--no-owner",
            "--exit-on-error",
            f"--dbname={_libpq(second_database)}",
            str(dump),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    restored = _in_schema(second_database, schema)

    assert "current" in run.ok("db", "status", db=restored).stdout
    _verify(run, restored, note, signing_key)
    assert {c for (c,) in execute(restored, "SELECT code FROM participants")} == {
        "P-001",
        "P-002",
        "P-003",
    }
    # the append-only trigger came back with the schema
    with pytest.raises(DBAPIError, match="the audit trail is append-only: DELETE refused"):
        execute(restored, "DELETE FROM audit_events")
