"""Schema migrations: the head revision is the ORM schema; behind, ahead and ``db upgrade``.

A database whose schema is behind this release is refused with the command
that fixes it (``randomizer db upgrade``); one that is ahead is refused with
"use the newer release". "Behind" is staged by giving the code a copy of its
migration scripts with one more revision (the head's number plus one), as the
next release will. The real upgrades (from ``0001`` and ``0002``) start from a
trial this release made, taken back to what the older release wrote: its later
tables and columns dropped, the audit chain recomputed without the rows record
that release did not write (:func:`_as_release`).
A trial taken back to 0007 checks that the upgrade opens a review of every
past emergency unblinding.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, create_engine, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SAWarning

from randomizer import audit, store
from randomizer.errors import AuthenticationFailed
from randomizer.models import Base, Participant
from randomizer.sealed import participant_named
from randomizer.sessions import issue_token, resolve_token
from randomizer.vault import Vault, read_key_file, unwrap_data_key
from tests.support.assertions import assert_error, assert_ok
from tests.support.database import audit_rows, dump_database, event_body, execute
from tests.support.exosome import answer_args
from tests.support.trial import ADMIN, Run, TrialFiles, build_trial, write_key_file

HEAD = store._revisions(
    str(resources.files("randomizer").joinpath("migrations"))  # the real head, whatever it is
)[0]
NEXT = f"{int(HEAD) + 1:04d}"
"""The test-only probe revision: one after the real head."""

NEXT_REVISION = (
    '''
"""A later release's schema change, for the tests.

Revision ID: {next}
Revises: {head}
"""
import sqlalchemy as sa
from alembic import op

revision = "{next}"
down_revision = "{head}"
branch_labels = None
depends_on = None
'''
    + """

def upgrade() -> None:
    op.create_table("upgrade_probe", sa.Column("id", sa.Integer(), primary_key=True))
    {fail}


def downgrade() -> None:
    raise NotImplementedError
"""
)


EXPRESSION_INDEX = "ix_participants_code_upper"
"""The one index on an expression: SQLite's reflection cannot read it, so the comparison
leaves it out and :func:`test_participant_ids_are_found_through_their_index` checks it."""


def _compare(db_url: str, metadata: MetaData) -> list[Any]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
            warnings.filterwarnings("ignore", "autogenerate skipping .* expression-based index")
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": lambda _object, name, kind, _reflected, _other: (
                        kind != "index" or name != EXPRESSION_INDEX
                    ),
                },
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _tables(db_url: str) -> set[str]:
    engine = create_engine(db_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _without_trail(dump: dict[str, Any]) -> dict[str, Any]:
    return {name: rows for name, rows in dump.items() if not name.startswith("audit_")}


def _revision(db_url: str) -> str:
    [(revision,)] = execute(db_url, "SELECT version_num FROM alembic_version")
    return str(revision)


# the head revision ------------------------------------------------------------------------


def test_the_migrations_create_exactly_the_orm_schema(initialized_trial: TrialFiles) -> None:
    assert _revision(initialized_trial.db_url) == HEAD
    assert _compare(initialized_trial.db_url, Base.metadata) == []
    assert _tables(initialized_trial.db_url) == set(Base.metadata.tables) | {"alembic_version"}


def test_participant_ids_are_found_through_their_index(initialized_trial: TrialFiles) -> None:
    """Every action finds a participant by ``upper(code)``: the migrations index that
    expression, and the database's planner uses it (no read of every participant)."""
    engine = create_engine(initialized_trial.db_url)
    query = select(Participant.id).where(participant_named("P-001"))
    try:
        with engine.connect() as conn:
            compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
            if engine.dialect.name == "sqlite":
                plan = " ".join(
                    str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
                )
            else:
                conn.exec_driver_sql("SET enable_seqscan = off")
                plan = " ".join(str(row[0]) for row in conn.exec_driver_sql(f"EXPLAIN {compiled}"))
    finally:
        engine.dispose()
    assert EXPRESSION_INDEX in plan, plan


def test_the_schema_comparison_sees_a_difference(initialized_trial: TrialFiles) -> None:
    """The comparison above can fail: one extra model column is reported."""
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["kits"].append_column(Column("batch", Integer, nullable=True))
    [difference] = _compare(initialized_trial.db_url, changed)
    assert difference[0] == "add_column"
    assert (difference[2], difference[3].name) == ("kits", "batch")


def test_db_status_of_a_current_database(initialized_trial: TrialFiles, run: Run) -> None:
    result = run("db", "status")
    assert_ok(result)
    assert result.stdout == (f"schema {HEAD}; this release expects {HEAD}: current, up to date\n")
    assert json.loads(run.ok("db", "status", "--json").stdout) == {
        "current": HEAD,
        "head": HEAD,
        "state": "current",
    }


def test_db_status_of_an_empty_database(db_url: str, run: Run) -> None:
    write_key_file(run.files.key_file, os.urandom(32))
    if run.files.db_path is not None:
        # a missing SQLite file is refused rather than created empty (a mistyped --db)
        assert_error(run("db", "status"), 1, "the file does not exist")
        assert not run.files.db_path.exists()
        run.files.db_path.touch()
    result = run.ok("db", "status")
    assert result.stdout == (
        f"schema (none); this release expects {HEAD}: empty, run 'randomizer init'\n"
    )
    assert_error(
        run("user", "list", user=ADMIN),
        1,
        "no randomizer trial in ",
        ": create the trial first (run 'randomizer init')",
    )


def test_db_upgrade_of_a_current_database_changes_only_the_trail(
    initialized_trial: TrialFiles, run: Run
) -> None:
    before = dump_database(initialized_trial.db_url)
    result = run.ok("db", "upgrade", user=ADMIN)
    assert result.stdout == f"schema {HEAD} -> {HEAD}\n"
    assert _without_trail(dump_database(initialized_trial.db_url)) == _without_trail(before)
    assert audit_rows(initialized_trial.db_url)[-1]["details"] == {"before": HEAD, "after": HEAD}


def test_a_database_without_its_revision_row_is_not_called_empty(
    initialized_trial: TrialFiles, run: Run
) -> None:
    """Tables without a revision: 'run init' would be refused, so it must not be advised."""
    execute(initialized_trial.db_url, "DELETE FROM alembic_version")
    before = dump_database(initialized_trial.db_url)
    status = run.ok("db", "status")
    assert "run 'randomizer init'" not in status.stdout
    assert "unversioned" in status.stdout
    for argv, user in ((("user", "list"), ADMIN), (("db", "upgrade"), ADMIN)):
        message = assert_error(run(*argv, user=user), 1, "no schema revision")
        assert "run 'randomizer init'" not in message
    assert _without_trail(dump_database(initialized_trial.db_url)) == _without_trail(before)


# ahead: a newer release wrote this database -------------------------------------------------

AHEAD = (
    f"the database schema (9999) is newer than this randomizer knows ({HEAD}): "
    "use the newer release"
)

# every command that opens the trial, with a user allowed to run it
COMMANDS: list[tuple[tuple[str, ...], str]] = [
    (("user", "list"), ADMIN),
    (("user", "add", "zoe", "--role", "monitor", "--password-stdin"), ADMIN),
    (("user", "disable", "mona"), ADMIN),
    (("user", "passwd", "--password-stdin"), "mona"),
    (("key", "rotate", "--new-key-file", "{dir}/new.key"), ADMIN),
    (("list", "generate"), ADMIN),
    (("list", "verify"), ADMIN),
    (("randomize", "P-001", "--site", "WAW", "--answer", "age=40"), "ivan"),
    (("kit", "request", "P-001", "--visit", "1"), "ivan"),
    (("kit", "replace", "ABCD-EFGH", "--reason", "torn"), "ivan"),
    (("pharmacy", "prepare", "ABCD-EFGH"), "petra"),
    (("pharmacy", "list"), "petra"),
    (("unblind", "emergency", "P-001", "--reason", "anaphylaxis"), "ivan"),
    (("unblind", "all", "--out", "{dir}/all.csv"), "stan"),
    (("lock", "--reason", "end"), ADMIN),
    (("report",), "stan"),
    (("audit", "show"), "mona"),
    (("audit", "verify"), ADMIN),
    (("audit", "checkpoint", "--signing-key", "{dir}/signing.pem"), ADMIN),
]


def _argv(argv: tuple[str, ...], directory: Path) -> list[str]:
    return [a.replace("{dir}", str(directory)) for a in argv]


def _refused_everywhere(files: TrialFiles, run: Run, message: str) -> None:
    """Every command of COMMANDS exits 1 with ``message`` and changes nothing at all.

    One trial serves all commands (a PostgreSQL trial takes a second to build).
    """
    run.ok("audit", "keygen", "--out", str(files.directory / "signing.pem"))
    before = dump_database(files.db_url)
    for argv, user in COMMANDS:
        result = run(*_argv(argv, files.directory), user=user, input="new-pw-1234567\n")
        assert assert_error(result, 1) == message, argv
    # the check comes before the login: not even a refusal event is written
    assert dump_database(files.db_url) == before
    assert not (files.directory / "all.csv").exists()
    assert not (files.directory / "new.key").exists()


def test_every_command_refuses_a_database_that_is_ahead(
    trial_with_users: TrialFiles, run: Run
) -> None:
    execute(trial_with_users.db_url, "UPDATE alembic_version SET version_num = '9999'")
    _refused_everywhere(trial_with_users, run, AHEAD)


def test_db_status_and_upgrade_of_a_database_that_is_ahead(
    trial_with_users: TrialFiles, run: Run
) -> None:
    execute(trial_with_users.db_url, "UPDATE alembic_version SET version_num = '9999'")
    result = run.ok("db", "status")
    assert result.stdout == (
        f"schema 9999; this release expects {HEAD}: ahead, use the newer randomizer release\n"
    )
    before = dump_database(trial_with_users.db_url)
    assert assert_error(run("db", "upgrade", user=ADMIN), 1) == AHEAD
    assert _revision(trial_with_users.db_url) == "9999"
    # the schema is untouched; at most the refusal itself joins the trail
    assert _without_trail(dump_database(trial_with_users.db_url)) == _without_trail(before)


# behind: this release is newer than the database ----------------------------------------


def _copy_scripts(tmp_path: Path) -> Path:
    """A copy of this release's migration scripts."""
    scripts = tmp_path / "migrations"
    shutil.copytree(
        str(resources.files("randomizer").joinpath("migrations")),
        scripts,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return scripts


def _newer_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
    """Make this process a release whose migrations end at NEXT (a copy of the scripts)."""
    scripts = _copy_scripts(tmp_path)
    failure = f'raise RuntimeError("migration {NEXT} failed half-way")' if fail else "pass"
    (scripts / "versions" / f"{NEXT}_probe.py").write_text(
        NEXT_REVISION.format(fail=failure, next=NEXT, head=HEAD)
    )
    _use_scripts(scripts, monkeypatch)


def _use_scripts(scripts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the migration scripts in ``scripts`` instead of the package's."""
    monkeypatch.setattr(store, "script_location", lambda: str(scripts))


@pytest.fixture
def behind(
    trial_with_list: TrialFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TrialFiles]:
    """The trial at schema HEAD, run by a release whose head is NEXT."""
    _newer_release(tmp_path, monkeypatch)
    yield trial_with_list


BEHIND = (
    f"the database schema ({HEAD}) is behind this randomizer ({NEXT}): take a backup, "
    "then an admin upgrades the database schema (run 'randomizer backup --out FILE', "
    "then 'randomizer db upgrade')"
)


def test_every_command_refuses_a_database_that_is_behind(behind: TrialFiles, run: Run) -> None:
    _refused_everywhere(behind, run, BEHIND)


def test_db_upgrade_brings_a_database_that_is_behind_up_to_date(
    behind: TrialFiles, run: Run
) -> None:
    result = run.ok("db", "status")
    assert result.stdout == (
        f"schema {HEAD}; this release expects {NEXT}: behind, run 'randomizer db upgrade'\n"
    )
    trail = len(audit_rows(behind.db_url))

    upgraded = run.ok("db", "upgrade", "--json", user=ADMIN)
    assert json.loads(upgraded.stdout) == {"before": HEAD, "after": NEXT}
    assert _revision(behind.db_url) == NEXT
    assert "upgrade_probe" in _tables(behind.db_url)
    events = audit_rows(behind.db_url)[trail:]
    assert [(e["action"], e["user"], e["subject"]) for e in events] == [
        ("auth.login", ADMIN, "db.upgrade"),
        ("db.upgrade", ADMIN, ""),
    ]
    assert events[-1]["details"] == {"before": HEAD, "after": NEXT}

    assert run.ok("db", "status").stdout == (
        f"schema {NEXT}; this release expects {NEXT}: current, up to date\n"
    )
    assert "Audit trail verified" in run.ok("audit", "verify", user=ADMIN).stdout
    assert "it matches its seed" in run.ok("list", "verify", user=ADMIN).stdout
    run.ok("randomize", "P-001", "--site", "WAW", *answer_args(age="40"), user="ivan")


def test_only_an_admin_may_upgrade(behind: TrialFiles, run: Run) -> None:
    for user, role in (
        ("ivan", "investigator"),
        ("petra", "pharmacist"),
        ("stan", "statistician"),
        ("mona", "monitor"),
    ):
        trail = len(audit_rows(behind.db_url))
        assert assert_error(run("db", "upgrade", user=user), 1) == (
            f"role {role} may not back up, restore or upgrade the database"
        )
        [refusal] = audit_rows(behind.db_url)[trail:]
        assert (refusal["action"], refusal["user"], refusal["details"]["command"]) == (
            "refused",
            user,
            "db.upgrade",
        )
    assert _revision(behind.db_url) == HEAD
    assert "upgrade_probe" not in _tables(behind.db_url)


def test_a_failing_migration_changes_nothing(
    trial_with_list: TrialFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run
) -> None:
    _newer_release(tmp_path, monkeypatch, fail=True)
    before = dump_database(trial_with_list.db_url)
    assert_error(
        run("db", "upgrade", user=ADMIN),
        1,
        "internal error (RuntimeError)",
        "nothing was committed",
    )
    assert _revision(trial_with_list.db_url) == HEAD
    assert "upgrade_probe" not in _tables(trial_with_list.db_url)
    assert dump_database(trial_with_list.db_url) == before


# the real upgrades: an older release's trial -> HEAD -----------------------------------------

ROW_MAC_TABLES = ("trial", "users", "user_sites", "strata", "slots", "participants", "kits")
CHAIN = ("0001", "0002", "0004", "0005", "0007", "0006", "0008", "0009", "0010")
"""The revisions in the order they apply (numbered as they were written, chained as merged)."""
ADDED: dict[str, tuple[str, ...]] = {
    "0002": ("DROP TABLE auth_tokens", "DROP TABLE login_failures"),
    "0004": tuple(
        f"ALTER TABLE trial DROP COLUMN {c}"
        for c in ("key_format", "wrapped_audit_key", "wrapped_row_key")
    ),
    "0005": tuple(
        f"ALTER TABLE trial DROP COLUMN {c}"
        for c in ("list_generated_by", "list_state", "list_approved_at", "list_approved_by")
    )
    + tuple(
        f"ALTER TABLE participants DROP COLUMN {c}"
        for c in ("voided_at", "voided_by", "void_reason", "randomization_meaning", "void_meaning")
    ),
    "0007": ("DROP TABLE user_sites",),
    "0006": ("DROP TABLE unblinding_reviews", "DROP TABLE mail_outbox"),
    "0008": tuple(f"ALTER TABLE {table} DROP COLUMN row_mac" for table in ROW_MAC_TABLES)
    + ("ALTER TABLE audit_events DROP COLUMN rows",),
    "0009": ("DROP INDEX ix_participants_code_upper",),
    "0010": ("DROP INDEX ix_audit_events_subject",),
}
"""What each revision added, as the statements that take it away again."""


def _as_release(files: TrialFiles, revision: str) -> None:
    """Take a trial this release made back to what the release of ``revision`` wrote.

    Everything the later revisions added is dropped (newest first). That release had no
    row MACs and no rows record in the events (0008): the audit chain is recomputed
    without the rows record, with the key, as that release chained it. Then the revision
    row says ``revision``.
    """
    url = files.db_url
    [(trial_id, wrapped)] = execute(url, "SELECT id, wrapped_data_key FROM trial")
    key = Vault(unwrap_data_key(read_key_file(files.key_file), bytes(wrapped)), trial_id)
    events = audit_rows(url)
    postgres = make_url(url).get_backend_name() == "postgresql"
    later = CHAIN[CHAIN.index(revision) + 1 :]
    statements = [sql for rev in reversed(later) for sql in ADDED[rev]]
    if postgres:
        statements.append("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
    prev = audit.GENESIS_MAC
    for event in events:
        body = event_body({**event, "rows": None})  # that release recorded no rows
        mac = audit.event_mac(key.audit_key(), prev, body)
        statements.append(
            f"UPDATE audit_events SET prev_mac = '{prev}', mac = '{mac}' WHERE seq = {event['seq']}"
        )
        prev = mac
    statements.append(f"UPDATE audit_head SET seq = {len(events)}, mac = '{prev}'")
    if postgres:
        statements.append("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    statements.append(f"UPDATE alembic_version SET version_num = '{revision}'")
    execute(url, *statements)


def _behind_message(revision: str) -> str:
    return (
        f"the database schema ({revision}) is behind this randomizer ({HEAD}): take a backup, "
        "then an admin upgrades the database schema (run 'randomizer backup --out FILE', "
        "then 'randomizer db upgrade')"
    )


def test_a_0001_database_upgrades_to_the_orm_schema(
    trial_files: TrialFiles, run: Run, tmp_path: Path
) -> None:
    build_trial(run, "list")
    url = trial_files.db_url
    _as_release(trial_files, "0001")
    assert _revision(url) == "0001"
    assert not {"auth_tokens", "login_failures"} & _tables(url)
    before = dump_database(url)
    assert assert_error(run("user", "list", user=ADMIN), 1) == _behind_message("0001")

    upgraded = run.ok("db", "upgrade", "--json", user=ADMIN)
    assert json.loads(upgraded.stdout) == {"before": "0001", "after": HEAD}
    assert _revision(url) == HEAD
    assert _compare(url, Base.metadata) == []
    assert _tables(url) == set(Base.metadata.tables) | {"alembic_version"}
    after = dump_database(url)
    assert (after["auth_tokens"], after["login_failures"]) == ([], [])
    # a list in use before approval existed goes on as approved (by no one); the trial
    # keeps its keys as they were (key format 1, no wrapped MAC keys)
    assert execute(url, "SELECT list_state, list_approved_by FROM trial") == [("approved", None)]
    assert execute(url, "SELECT key_format, wrapped_audit_key FROM trial") == [(1, None)]
    unchanged = {name for name in before if not name.startswith("audit_")} - {
        "alembic_version",
        "trial",
        "participants",
    }
    # every row as it was, plus its MAC (the new last column)
    assert {
        name: sorted((row[:-1] if name in ROW_MAC_TABLES else row for row in after[name]), key=repr)
        for name in unchanged
    } == {name: sorted(before[name], key=repr) for name in unchanged}
    assert "Audit trail verified" in run.ok("audit", "verify", user=ADMIN).stdout
    run.ok("verify", user=ADMIN)

    # the new tables work: a login of mona's dies when she is disabled
    database = store.Store(url)
    try:
        now = datetime.now(UTC)
        with database.transaction() as session:
            issued = issue_token(session, "mona", "api", now, "127.0.0.1")
        run.ok("user", "disable", "mona", "--reason", "left the study", user=ADMIN)
        with database.transaction() as session, pytest.raises(AuthenticationFailed):
            resolve_token(session, issued.token, now)
    finally:
        database.dispose()

    # the key format 1 trial rotates: key format 2, and everything still opens and verifies
    new_key = tmp_path / "rotated.key"
    run.ok("key", "rotate", "--new-key-file", str(new_key), user=ADMIN)
    assert execute(url, "SELECT key_format FROM trial") == [(2,)]
    assert "Audit trail verified" in run.ok("audit", "verify", user=ADMIN, key_file=new_key).stdout
    assert "it matches its seed" in run.ok("list", "verify", user=ADMIN, key_file=new_key).stdout
    run.ok("verify", user=ADMIN, key_file=new_key)


def test_a_database_before_row_macs_upgrades_with_a_mac_for_every_row(
    trial_files: TrialFiles, run: Run
) -> None:
    """The migration has no key; 'db upgrade' has, and computes the MACs in its transaction."""
    build_trial(run, "list")
    run.ok("randomize", "P-001", "--site", "WAW", *answer_args(age="40"), user="ivan")
    url = trial_files.db_url
    _as_release(trial_files, "0006")
    assert assert_error(run("user", "list", user=ADMIN), 1) == _behind_message("0006")
    [(trail,)] = execute(url, "SELECT count(*) FROM audit_events")

    upgraded = run.ok("db", "upgrade", "--json", user=ADMIN)
    assert json.loads(upgraded.stdout) == {"before": "0006", "after": HEAD}
    assert _compare(url, Base.metadata) == []
    counts = {
        table: execute(url, f"SELECT count(*) FROM {table}")[0][0] for table in ROW_MAC_TABLES
    }
    for table in ROW_MAC_TABLES:
        assert execute(url, f"SELECT count(*) FROM {table} WHERE row_mac IS NULL") == [(0,)]
    [login, upgrade] = audit_rows(url)[trail:]
    assert (login["action"], upgrade["action"]) == ("auth.login", "db.upgrade")
    sealed = {table: n for table, n in counts.items() if n}  # tables with no rows are not named
    assert upgrade["details"] == {"before": "0006", "after": HEAD, "row_macs": sealed}
    assert counts["participants"] == 1 and counts["kits"] > counts["slots"] > 0

    result = run.ok("verify", "--json", user="mona")
    assert json.loads(result.stdout)["problems"] == []
    run.ok("randomize", "P-002", "--site", "WAW", *answer_args(age="41"), user="ivan")
    assert json.loads(run.ok("verify", "--json", user=ADMIN).stdout)["problems"] == []

    # once upgraded, a row without a MAC is not given one by another 'db upgrade'
    execute(url, "UPDATE users SET row_mac = NULL, role = 'admin' WHERE name = 'mona'")
    run.ok("db", "upgrade", user=ADMIN)
    assert_error(run("audit", "show", user="mona"), 1, "integrity check failed: users row")
    broken = run("verify", user=ADMIN)
    assert_error(broken, 1, "the database failed verification")
    assert "users row" in broken.stdout


def test_the_database_url_of_a_refusal_hides_its_password(db_url: str, run: Run) -> None:
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("only a server URL carries a password")
    write_key_file(run.files.key_file, os.urandom(32))
    with_password = url.set(password="hunter2-secret").render_as_string(hide_password=False)
    result = run("user", "list", user=ADMIN, db=with_password)
    assert "hunter2-secret" not in result.output
    assert_error(result, 1, "no randomizer trial in ", "***")


def test_a_database_before_0006_opens_a_review_of_every_past_unblinding(
    trial_files: TrialFiles, run: Run
) -> None:
    build_trial(run, "list")
    run.ok("randomize", "P-001", "--site", "WAW", *answer_args(age="40"), user="ivan")
    run.ok("unblind", "emergency", "P-001", "--reason", "anaphylaxis", user="ivan")
    run.ok("unblind", "emergency", "P-001", "--reason", "second look", user=ADMIN)
    url = trial_files.db_url
    # the release before (schema 0007) had no reviews and no outbox (and no row MACs)
    _as_release(trial_files, "0007")
    assert _revision(url) == "0007"
    run.ok("db", "upgrade", user=ADMIN)
    assert _compare(url, Base.metadata) == []
    events = [e for e in audit_rows(url) if e["action"] == "unblind.emergency"]
    assert execute(
        url,
        "SELECT audit_seq, unblinded_by, reason, closed_at FROM unblinding_reviews ORDER BY id",
    ) == [(e["seq"], e["user"], e["reason"], None) for e in events]
    assert [e["reason"] for e in events] == ["anaphylaxis", "second look"]
    listed = run.ok("unblind", "review", "list", "--json", user="mona")
    assert [(i["unblinded_by"], i["unblinded_at"]) for i in json.loads(listed.stdout)] == [
        (e["user"], e["at"]) for e in events
    ]
    assert execute(url, "SELECT count(*) FROM mail_outbox") == [(0,)]
