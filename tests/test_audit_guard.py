"""The append-only audit table on PostgreSQL: the trigger and the insert-only role.

The trigger of schema revision 0001 refuses UPDATE, DELETE and TRUNCATE on
``audit_events`` for every role, the owner included. The grants in
docs/operations.md make an application role that may only append to the
trail and cannot switch the trigger off; these tests run that SQL as written
and then play a whole trial as that role.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tests.support.assertions import assert_error
from tests.support.database import (
    audit_rows,
    dump_database,
    execute,
    postgres_url,
    without_audit,
)
from tests.support.exosome import answer_args
from tests.support.trial import ADMIN, Run, TrialFiles

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        postgres_url() is None, reason="the audit trigger and grants exist on PostgreSQL only"
    ),
]

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"

TAMPERING = {
    "UPDATE": "UPDATE audit_events SET reason = 'nothing happened' WHERE seq = 1",
    "UPDATE all": 'UPDATE audit_events SET "user" = "user"',
    "DELETE": "DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)",
    "TRUNCATE": "TRUNCATE audit_events",
}


def _refused(db_url: str, statement: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as caught:
        execute(db_url, statement)
    return caught.value


def _sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


# the trigger ------------------------------------------------------------------------------


def test_the_owner_may_not_alter_the_trail(trial_with_users: TrialFiles, run: Run) -> None:
    before = dump_database(trial_with_users.db_url)
    for name, statement in TAMPERING.items():
        error = _refused(trial_with_users.db_url, statement)
        verb = name.split()[0]
        assert f"the audit trail is append-only: {verb} refused" in str(error.orig), name
        assert _sqlstate(error) == "42501", name  # insufficient_privilege
    assert dump_database(trial_with_users.db_url) == before
    assert "Audit trail verified" in run.ok("audit", "verify", user=ADMIN).stdout


def test_the_application_still_appends(trial_with_users: TrialFiles, run: Run) -> None:
    events = len(audit_rows(trial_with_users.db_url))
    run.ok("user", "list", user=ADMIN)
    run.ok("audit", "verify", user=ADMIN)
    added = audit_rows(trial_with_users.db_url)[events:]
    assert [(e["action"], e["subject"]) for e in added] == [
        ("auth.login", "user.list"),
        ("auth.login", "audit.verify"),
        ("audit.verify", ""),
    ]
    # a refusal is appended too, in a transaction of its own
    assert_error(run("user", "list", user="ivan"), 1, "role investigator may not")
    assert audit_rows(trial_with_users.db_url)[-1]["action"] == "refused"


def test_the_triggers_are_installed_by_the_migration(trial_with_users: TrialFiles) -> None:
    rows = execute(
        trial_with_users.db_url,
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_events'::regclass "
        "AND NOT tgisinternal AND tgenabled = 'O' ORDER BY tgname",
    )
    assert rows == [("audit_events_append_only",), ("audit_events_no_truncate",)]


# the insert-only application role ---------------------------------------------------------


def _grants_from_docs() -> str:
    blocks = re.findall(r"```sql\n(.*?)```", OPERATIONS.read_text(encoding="utf-8"), re.S)
    [grants] = [block for block in blocks if "CREATE ROLE randomizer_app" in block]
    return str(grants)


def _schema(url: str) -> str:
    """The schema a test URL's search_path names ('public' when it names none)."""
    found = re.search(r"search_path=([^\s,]+)", str(make_url(url).query.get("options", "")))
    return found.group(1) if found else "public"


@dataclass
class AppRole:
    """The insert-only role of docs/operations.md, made in this test's database."""

    name: str
    url: str


@pytest.fixture
def app_role(trial_with_users: TrialFiles) -> Iterator[AppRole]:
    """Run the documented GRANT statements on the trial database, as its owner."""
    owner_url = make_url(trial_with_users.db_url)
    name = f"randomizer_app_{uuid.uuid4().hex[:12]}"
    sql = _grants_from_docs().replace("randomizer_app", name)
    sql = sql.replace("ON DATABASE trial", f'ON DATABASE "{owner_url.database}"')
    # the tests keep each trial in a schema of their own; a real trial lives in 'public'
    sql = sql.replace("SCHEMA public", f'SCHEMA "{_schema(trial_with_users.db_url)}"')
    statements = [s.strip() for s in sql.split(";") if s.strip()]
    assert any(s.startswith("GRANT SELECT, INSERT ON audit_events") for s in statements)
    try:
        execute(trial_with_users.db_url, *statements)
        url = owner_url.set(username=name, password="change-me")
        yield AppRole(name, url.render_as_string(hide_password=False))
    finally:
        execute(trial_with_users.db_url, f'DROP OWNED BY "{name}"', f'DROP ROLE IF EXISTS "{name}"')


def test_the_application_role_may_not_alter_the_trail(
    app_role: AppRole, trial_with_users: TrialFiles
) -> None:
    before = dump_database(trial_with_users.db_url)
    for name, statement in TAMPERING.items():
        error = _refused(app_role.url, statement)
        assert "permission denied for table audit_events" in str(error.orig), name
        assert _sqlstate(error) == "42501", name
    assert dump_database(trial_with_users.db_url) == before


def test_the_application_role_may_not_remove_the_guard(
    app_role: AppRole, trial_with_users: TrialFiles
) -> None:
    for statement in (
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
        "ALTER TABLE audit_events DISABLE TRIGGER ALL",
        "DROP TRIGGER audit_events_append_only ON audit_events",
        "DROP TABLE audit_events",
        "DROP FUNCTION randomizer_audit_append_only() CASCADE",
    ):
        error = _refused(app_role.url, statement)
        assert "must be owner of" in str(error.orig), statement
        assert _sqlstate(error) == "42501", statement
    assert (
        len(
            execute(
                trial_with_users.db_url,
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_events'::regclass "
                "AND NOT tgisinternal AND tgenabled = 'O'",
            )
        )
        == 2
    )


def test_the_application_role_may_not_delete_anywhere(
    app_role: AppRole, trial_with_users: TrialFiles
) -> None:
    for table in (
        "trial",
        "users",
        "strata",
        "slots",
        "participants",
        "kits",
        "audit_head",
        "auth_tokens",
        "login_failures",
        "alembic_version",
    ):
        error = _refused(app_role.url, f"DELETE FROM {table}")
        assert f"permission denied for table {table}" in str(error.orig)


def test_a_whole_trial_runs_as_the_application_role(
    app_role: AppRole, trial_with_users: TrialFiles, run: Run
) -> None:
    """The documented grants are enough for every command but init, key rotate and restores."""
    directory = trial_with_users.directory

    def ok(user: str, *args: str, input: str | None = None) -> str:
        return run.ok(*args, user=user, db=app_role.url, input=input).stdout

    assert "current" in ok(ADMIN, "db", "status")
    ok(
        ADMIN,
        "user",
        "add",
        "zoe",
        "--role",
        "monitor",
        "--password-stdin",
        input="pw-zoe-1234567890\n",
    )
    ok(ADMIN, "user", "disable", "zoe", "--reason", "left the team")
    ok("mona", "user", "passwd", "--password-stdin", input="pw-monitor-123456\n")
    ok(ADMIN, "list", "generate")
    first = ok("ivan", "randomize", "P-001", "--site", "WAW", *answer_args())
    kit = re.search(r"Visit 1 kit: (\S+)", first)
    assert kit is not None
    ok("ivan", "randomize", "P-002", "--site", "WAW", *answer_args())
    ok("ivan", "kit", "request", "P-001", "--visit", "1")
    replaced = ok("ivan", "kit", "replace", kit.group(1), "--reason", "bag punctured")
    spare = re.search(r"use kit (\S+)", replaced)
    assert spare is not None
    ok("petra", "pharmacy", "prepare", spare.group(1))
    ok("petra", "pharmacy", "list")
    ok("ivan", "unblind", "emergency", "P-002", "--reason", "anaphylaxis")
    ok("stan", "report")
    ok("mona", "audit", "show", "--limit", "5")
    ok(ADMIN, "audit", "keygen", "--out", str(directory / "qa.pem"))
    note = directory / "checkpoint.note"
    note.write_text(ok(ADMIN, "audit", "checkpoint", "--signing-key", str(directory / "qa.pem")))
    # key rotate rewrites every sealed slot, which the application role may not: it is
    # refused with nothing changed and no new key file left, and runs as the owner
    new_key = directory / "new.key"
    before = dump_database(trial_with_users.db_url)
    refused = run("key", "rotate", "--new-key-file", str(new_key), user=ADMIN, db=app_role.url)
    assert_error(refused, 1, "this database role may not (slots): run it as the database owner")
    assert not new_key.exists()
    assert without_audit(dump_database(trial_with_users.db_url)) == without_audit(before)
    run.ok("key", "rotate", "--new-key-file", str(new_key), user=ADMIN)
    new_key.replace(trial_with_users.key_file)
    ok(ADMIN, "db", "upgrade")
    ok(ADMIN, "lock", "--reason", "last visit done")
    ok("stan", "unblind", "all", "--out", str(directory / "unblinded.csv"))
    ok(ADMIN, "list", "verify")
    verified = ok(
        ADMIN,
        "audit",
        "verify",
        "--checkpoint",
        str(note),
        "--public-key",
        str(directory / "qa.pem.pub"),
    )
    assert "signed checkpoint at event" in verified
    # every event above was appended by the application role, none altered
    users = {e["user"] for e in audit_rows(trial_with_users.db_url)}
    assert {"alice", "ivan", "petra", "stan", "mona"} <= users
