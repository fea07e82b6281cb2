"""A database that cannot be reached, refuses the login, or goes away mid-command.

Issue 5, "Bad input": each gives one ``Error:`` line and exit 1, never a
traceback, and leaves nothing behind: no key file, no database file, no
directory, no half-written change. Unreachable and unusable URLs are tried
in-process over a few commands (and once as a real process); a server that
goes away is a real CLI process paused inside ``randomize`` (the test-only
``pause:`` fault point) whose PostgreSQL backend the test terminates.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy.engine import make_url

from tests.support.assertions import assert_error, assert_ok
from tests.support.database import (
    audit_rows,
    dump_database,
    execute,
    postgres_url,
    without_audit,
)
from tests.support.exosome import answer_args
from tests.support.processes import cli_process, finish
from tests.support.trial import PASSWORDS, Run, TrialFiles, write_key_file

SECRET = "pw-never-shown-42"
"""A password in the refused URLs, which no message may echo."""

COMMANDS = {
    "init": ("init", "--design", "exosome-ms", "--admin", "alice"),
    "db status": ("db", "status"),
    "audit verify": ("--user", "alice", "audit", "verify"),
    "randomize": ("--user", "ivan", "randomize", "P-001", "--site", "WAW", *answer_args()),
}


def assert_one_error_line(code: int, stdout: str, stderr: str) -> str:
    """Exit 1, nothing on stdout, one ``Error:`` line on stderr, no traceback."""
    assert code == 1, stderr
    assert stdout == "", "something was printed for an action that did not happen"
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert "internal error" not in lines[0], lines[0]
    return lines[0]


def closed_port() -> int:
    """A loopback TCP port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tree(folder: Path) -> dict[str, str]:
    """Every path below ``folder`` with a digest of its content ('dir' for a directory)."""
    return {
        str(p.relative_to(folder)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def invoke(run: Run, url: str, key_file: Path, command: str) -> Result:
    """One command against ``url``; every user's password is right, so only the URL fails."""
    args = COMMANDS[command]
    user = args[1] if args[0] == "--user" else "alice"
    return run(
        *args, db=url, key_file=key_file, input="", env={"RANDOMIZER_PASSWORD": PASSWORDS[user]}
    )


def assert_refused_leaving_nothing(run: Run, tmp_path: Path, url: str, *fragments: str) -> None:
    """Every command: exit 1, one Error line naming ``fragments``; the folder unchanged."""
    key_file = tmp_path / "trial.key"
    for command in COMMANDS:
        fresh = command == "init"  # init writes the key file: it must not, here
        if fresh:
            key_file.unlink(missing_ok=True)
        elif not key_file.exists():
            write_key_file(key_file, secrets.token_bytes(32))  # let the database be reached
        before = tree(tmp_path)
        result = invoke(run, url, key_file, command)
        message = assert_error(result, 1, *fragments)
        assert SECRET not in result.output, "the database password was shown"
        assert tree(tmp_path) == before, f"{command} left something behind: {message}"
        assert not (fresh and key_file.exists()), "init wrote a key file for no database"


# unreachable and unusable URLs ------------------------------------------------------------


def test_an_unreachable_server_is_one_error_line(run: Run, tmp_path: Path) -> None:
    url = f"postgresql+psycopg://randomizer:{SECRET}@127.0.0.1:{closed_port()}/trial"
    assert_refused_leaving_nothing(run, tmp_path, url, "database error", "refused")


def test_an_unreachable_server_as_a_real_process(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://randomizer:{SECRET}@127.0.0.1:{closed_port()}/trial"
    key_file = write_key_file(tmp_path / "trial.key", secrets.token_bytes(32))
    before = tree(tmp_path)
    process = cli_process(url, key_file, "ivan", *COMMANDS["randomize"][2:])
    line = assert_one_error_line(*finish(process))
    assert "refused" in line and SECRET not in line, line
    assert tree(tmp_path) == before


SQLITE_CASES: dict[str, Callable[[Path], str]] = {
    "in a directory that does not exist": lambda tmp: f"{tmp}/no/such/dir/trial.db",
    "a directory": lambda tmp: _make(tmp / "a-directory", directory=True),
    "a file that is not a database": lambda tmp: _make(tmp / "notes.db", b"not SQLite\n" * 99),
    "a truncated database file": lambda tmp: _make(tmp / "half.db", b"SQLite format 3\0" * 9),
}


def _make(path: Path, content: bytes = b"", directory: bool = False) -> str:
    if directory:
        path.mkdir()
    else:
        path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("case", SQLITE_CASES)
def test_an_unusable_sqlite_path_is_one_error_line(run: Run, tmp_path: Path, case: str) -> None:
    path = SQLITE_CASES[case](tmp_path)
    assert_refused_leaving_nothing(run, tmp_path, f"sqlite:///{path}")
    assert not (tmp_path / "no").exists()


@pytest.fixture
def server() -> str:
    """The PostgreSQL maintenance URL (skips the test on a SQLite run)."""
    url = postgres_url()
    if url is None:
        pytest.skip("needs a PostgreSQL server (RANDOMIZER_TEST_DB)")
    return url


@pytest.mark.postgres
@pytest.mark.parametrize("role", ["no_such_role", "locked_out", "busy_bee"])
def test_a_refused_login_is_one_error_line(
    run: Run, tmp_path: Path, server: str, role: str
) -> None:
    # The test cluster trusts every local login, so a role that does not exist is
    # the refusal we can provoke; its name must not pass for "the database is busy".
    url = make_url(server).set(username=role, password=SECRET)
    assert_refused_leaving_nothing(
        run,
        tmp_path,
        url.render_as_string(hide_password=False),
        "database error",
        f'role "{role}" does not exist',
    )


@pytest.mark.postgres
def test_a_missing_database_is_one_error_line(run: Run, tmp_path: Path, server: str) -> None:
    name = f"randomizer_missing_{secrets.token_hex(4)}"
    url = make_url(server).set(database=name)
    assert_refused_leaving_nothing(
        run,
        tmp_path,
        url.render_as_string(hide_password=False),
        "database error",
        f'database "{name}" does not exist',
    )
    assert not execute(server, "SELECT 1 FROM pg_database WHERE datname = :name", name=name)


# a server that goes away mid-command ------------------------------------------------------


def _application_name(db_url: str) -> str:
    name = make_url(db_url).query.get("application_name")
    assert isinstance(name, str), "conftest names each test's PostgreSQL connections"
    return name


def _terminate_when_paused(
    server: str, application: str, statement: str, process: subprocess.Popen[str]
) -> None:
    """Wait until the CLI's backend has idled inside its transaction for a second after
    ``statement`` (the fault point sleeps 5 s), then terminate that backend: this test's
    only, by its application_name, as other tests share the server."""
    paused = (
        "FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND application_name = :app "
        "AND state = 'idle in transaction' AND query LIKE :statement "
        "AND now() - state_change > interval '1 second'"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the CLI ended before it reached the pause"
        killed = execute(
            server,
            f"SELECT pg_terminate_backend(pid) {paused}",
            app=application,
            statement=f"{statement}%",
        )
        if killed:
            assert killed == [(True,)], killed
            return
        time.sleep(0.1)
    raise AssertionError("the CLI never paused inside its transaction")


GONE = [
    # (fault point, the last statement before it, the command)
    (
        "pause:randomize:slot-taken",
        "UPDATE participants",  # the new row's MAC, flushed after its INSERT
        ("randomize", "P-002", "--site", "WAW", *answer_args()),
    ),
    ("pause:randomize:before-commit", "", ("randomize", "P-002", "--site", "WAW", *answer_args())),
    ("pause:kit.replace:voided", "", ("kit", "replace", "{kit}", "--reason", "bag damaged")),
]


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize(("fault", "statement", "command"), GONE, ids=[g[0] for g in GONE])
def test_a_server_that_goes_away_mid_command(
    run: Run,
    trial_with_list: TrialFiles,
    server: str,
    fault: str,
    statement: str,
    command: tuple[str, ...],
) -> None:
    first = run.ok("--json", "randomize", "P-001", "--site", "WAW", *answer_args(), user="ivan")
    kit = first.stdout.split('"kit": "')[1][:9]
    args = [a.replace("{kit}", kit) for a in command]
    files = trial_with_list
    before = dump_database(files.db_url)

    process = cli_process(files.db_url, files.key_file, "ivan", *args, fault=fault)
    try:
        _terminate_when_paused(server, _application_name(files.db_url), statement, process)
    finally:
        outcome = finish(process)
    line = assert_one_error_line(*outcome)
    assert "database" in line, line

    assert dump_database(files.db_url) == before, "a change of the interrupted command survived"
    assert_ok(run("audit", "verify", user="alice"))

    retried = finish(cli_process(files.db_url, files.key_file, "ivan", *args))
    assert retried[0] == 0, retried[2]
    action = {"randomize": "randomize", "kit": "kit.replace"}[args[0]]
    assert audit_rows(files.db_url)[-1]["action"] == action
    assert without_audit(dump_database(files.db_url)) != without_audit(before)
    assert_ok(run("audit", "verify", user="alice"))
    assert_ok(run("list", "verify", user="alice"))
