"""Shared fixtures: a fast password hash, a database per test, a trial with users, a CLI runner.

The database is SQLite in ``tmp_path`` unless ``RANDOMIZER_TEST_DB`` names a
PostgreSQL server (``postgresql+psycopg://user:pw@host/postgres``): then each
test gets a schema of its own, created through that maintenance connection
and dropped afterwards. Tests that look at the SQLite file itself request the
``sqlite_only`` fixture, which skips them on PostgreSQL.

The prepared trials (``initialized_trial``, ``trial_with_users``,
``trial_with_list``) are built through the CLI; on SQLite once per session
and copied, on PostgreSQL once per test.

Helpers used by many test files (``assert_ok``, ``assert_error``,
``dump_database``, ``audit_rows``, ``execute``, ``open_trial_vault``) are plain
functions here; import them with ``from tests.conftest import ...``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, MetaData, create_engine, select, text
from sqlalchemy.engine import make_url

import cli
from randomizer import access
from randomizer.commands.base import CLI_HINTS
from randomizer.context import load_trial, open_vault
from randomizer.store import Store
from randomizer.vault import Vault

TEST_DB_ENV = "RANDOMIZER_TEST_DB"
DESIGN = "exosome-ms"
TRIAL_ID = "exosome-ms"
ARMS = ("exosome", "saline")
ARM_LABELS = ("MSC-derived exosomes", "0.9% saline (placebo)")

ADMIN = "alice"
USERS: Mapping[str, str] = {
    "alice": "admin",
    "ivan": "investigator",
    "petra": "pharmacist",
    "stan": "statistician",
    "mona": "monitor",
}
"""The users of ``trial_with_users``, name -> role."""

USER_OF_ROLE: Mapping[str, str] = {role: name for name, role in USERS.items()}
PASSWORDS: Mapping[str, str] = {name: f"pw-{role}-123456" for name, role in USERS.items()}
"""Each user's password (at least 12 characters)."""

OPAQUE = "the key file does not open this trial's data: wrong key file or altered data"
"""The one message of every failure to open a sealed value."""

NOT_CURRENT_KEY = ("the key file does not open this trial: it is not the trial's current key "
                   "(was the key rotated?)")
"""The message when the key file does not unwrap the trial's data key (old, wrong or altered)."""

_UNSET_ENV: dict[str, str | None] = {
    "RANDOMIZER_PASSWORD": None,
    "RANDOMIZER_USER": None,
    "RANDOMIZER_DB": None,
    "RANDOMIZER_KEY_FILE": None,
    "RANDOMIZER_DEBUG": None,
    "RANDOMIZER_TEST_FAULT": None,  # in-process, a crash-test hook would kill pytest itself
}


def postgres_url() -> str | None:
    """The PostgreSQL maintenance URL the tests run against, if any."""
    return os.environ.get(TEST_DB_ENV) or None


# fixtures: speed, database, trial files ------------------------------------


@pytest.fixture(autouse=True)
def fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap password hashes in-process (stored parameters keep verification exact)."""
    monkeypatch.setattr(access, "SCRYPT_N", 2**10)


@pytest.fixture
def is_postgres() -> bool:
    """Whether this run uses PostgreSQL rather than SQLite."""
    return postgres_url() is not None


@pytest.fixture
def sqlite_only(is_postgres: bool) -> None:
    """Skip a test about the SQLite file itself when running on PostgreSQL."""
    if is_postgres:
        pytest.skip("looks at the SQLite database file; this run uses PostgreSQL")


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in tmp_path, or a new schema on PostgreSQL.

    On PostgreSQL each test gets a schema of its own, named in the URL's
    ``search_path`` (creating a database per test costs half a second; a
    schema, a millisecond), and its connections carry the schema's name as
    ``application_name`` so teardown can end any a failed test left open.
    """
    server = postgres_url()
    if server is None:
        yield f"sqlite:///{tmp_path / 'trial.db'}"
        return
    schema = f"randomizer_test_{uuid.uuid4().hex[:16]}"
    with _maintenance(server) as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(server).update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with _maintenance(server) as conn:
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE application_name = '{schema}'")
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def _maintenance(server: str) -> Iterator[Any]:
    """An autocommit connection to the PostgreSQL maintenance database."""
    engine = create_engine(make_url(server), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


@dataclass
class TrialFiles:
    """Where one test's trial lives: database URL, key file and a scratch directory."""

    db_url: str
    key_file: Path
    directory: Path
    users: dict[str, str] = field(default_factory=dict)
    """Users created so far, name -> role."""

    @property
    def db_path(self) -> Path | None:
        """The SQLite database file, or None on another engine."""
        url = make_url(self.db_url)
        if url.get_backend_name() != "sqlite" or not url.database:
            return None
        return Path(url.database)


@pytest.fixture
def trial_files(db_url: str, tmp_path: Path) -> TrialFiles:
    """Paths for a trial that does not exist yet (the key file is not created)."""
    return TrialFiles(db_url=db_url, key_file=tmp_path / "trial.key", directory=tmp_path)


# the CLI runner ---------------------------------------------------------------


class Run:
    """Invoke ``cli.cli`` in-process with --db and --key-file of one trial.

    ``run("user", "list", user="alice")`` passes ``--user alice`` and sets
    RANDOMIZER_PASSWORD to that user's password from :data:`PASSWORDS` unless
    ``password`` is given; ``env={"RANDOMIZER_PASSWORD": None}`` unsets it.
    ``db`` and ``key_file`` override the trial's. Returns the click Result
    (``stdout``, ``stderr`` and ``output`` apart, click 8.2+).
    """

    def __init__(self, files: TrialFiles) -> None:
        self.files = files
        self.runner = CliRunner()

    def __call__(self, *args: str, user: str | None = None, password: str | None = None,
                 input: str | None = None, db: str | None = None,
                 key_file: Path | str | None = None,
                 env: Mapping[str, str | None] | None = None) -> Result:
        argv = ["--db", db or self.files.db_url,
                "--key-file", str(key_file or self.files.key_file)]
        if user is not None:
            argv += ["--user", user]
        environment = dict(_UNSET_ENV)
        if password is None and user is not None:
            password = PASSWORDS.get(user)
        environment["RANDOMIZER_PASSWORD"] = password
        environment.update(env or {})
        return self.runner.invoke(cli.cli, [*argv, *args], input=input, env=environment,
                                  prog_name="randomizer")

    def ok(self, *args: str, **kwargs: Any) -> Result:
        """Invoke and assert success."""
        result = self(*args, **kwargs)
        assert_ok(result)
        return result

    def init(self, admin: str = ADMIN, design: str = DESIGN) -> Result:
        """``init`` the trial with its first admin."""
        result = self.ok("init", "--design", design, "--admin", admin,
                         env={"RANDOMIZER_PASSWORD": PASSWORDS.get(admin, "pw-admin-123456")})
        self.files.users[admin] = "admin"
        return result

    def add_user(self, name: str, role: str, password: str | None = None,
                 actor: str = ADMIN) -> Result:
        """Add a user through the CLI as ``actor``."""
        result = self.ok("user", "add", name, "--role", role, "--password-stdin",
                         user=actor, input=(password or PASSWORDS[name]) + "\n")
        self.files.users[name] = role
        return result


@pytest.fixture
def run(trial_files: TrialFiles) -> Run:
    """The CLI bound to this test's trial files."""
    return Run(trial_files)


STAGES = ("init", "users", "list")
"""How far a prepared trial goes: admin only, one user per role, the generated list."""


def build_trial(run: Run, stage: str) -> None:
    """Bring a new trial to ``stage`` through the CLI."""
    run.init()
    if stage in ("users", "list"):
        for name, role in USERS.items():
            if name != ADMIN:
                run.add_user(name, role)
    if stage == "list":
        run.ok("list", "generate", user=ADMIN)


class _Templates:
    """SQLite trials built once per session and copied into each test's tmp_path.

    Building one through the CLI takes a few hundred milliseconds; copying a
    file takes one. Every copy shares the template's keys and seed, which no
    test relies on being unique. On PostgreSQL each test builds its own trial.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, TrialFiles] = {}

    def install(self, stage: str, run: Run) -> None:
        files = run.files
        if files.db_path is None:
            build_trial(run, stage)
            return
        template = self.built.get(stage) or self._build(stage)
        assert template.db_path is not None
        shutil.copy2(template.db_path, files.db_path)
        shutil.copy2(template.key_file, files.key_file)  # keeps mode 0600
        files.users.update(template.users)

    def _build(self, stage: str) -> TrialFiles:
        directory = self.root / stage
        directory.mkdir()
        files = TrialFiles(db_url=f"sqlite:///{directory / 'trial.db'}",
                           key_file=directory / "trial.key", directory=directory)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(access, "SCRYPT_N", 2**10)
            build_trial(Run(files), stage)
        assert files.db_path is not None
        # fold the WAL into the main file so that one file is the whole database
        connection = sqlite3.connect(files.db_path)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
        assert not Path(f"{files.db_path}-wal").exists()
        self.built[stage] = files
        return files


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> _Templates:
    return _Templates(tmp_path_factory.mktemp("templates"))


def _prepared(stage: str, run: Run, templates: _Templates) -> TrialFiles:
    templates.install(stage, run)
    return run.files


@pytest.fixture
def initialized_trial(run: Run, _templates: _Templates) -> TrialFiles:
    """The exosome-ms trial with its admin alice and nothing else."""
    return _prepared("init", run, _templates)


@pytest.fixture
def trial_with_users(run: Run, _templates: _Templates) -> TrialFiles:
    """The trial with one user per role: alice, ivan, petra, stan, mona (no list yet)."""
    return _prepared("users", run, _templates)


@pytest.fixture
def trial_with_list(run: Run, _templates: _Templates) -> TrialFiles:
    """The trial with its users and the generated allocation list."""
    return _prepared("list", run, _templates)


def all_commands() -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and group of the CLI with its path (the root is the empty path)."""
    def walk(command: click.Command,
             path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in sorted(command.commands.items()):
                yield from walk(sub, (*path, name))
    yield from walk(cli.cli, ())


# assertions ---------------------------------------------------------------------


def _describe(result: Result) -> str:
    return (f"exit {result.exit_code}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}\n"
            f"exception: {result.exception!r}")


def assert_ok(result: Result) -> None:
    """Exit 0, nothing on stderr, no exception."""
    assert result.exit_code == 0, _describe(result)
    assert result.exception is None, _describe(result)
    assert result.stderr == "", _describe(result)


def assert_error(result: Result, exit_code: int, *fragments: str) -> str:
    """A clean refusal: the exit code, exactly one stderr line ``Error: ...`` holding each
    fragment, no traceback anywhere. Returns the message after ``Error: ``."""
    assert result.exit_code == exit_code, _describe(result)
    assert isinstance(result.exception, SystemExit), _describe(result)
    assert "Traceback" not in result.output, _describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, _describe(result)
    assert lines[0].startswith("Error: "), _describe(result)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0].removeprefix("Error: ")


def without_cli_hint(message: str) -> str:
    """The library's message in an ``Error:`` line: the line less the CLI's hint, if any.

    Refusals are audited with the library's message, which every front end shares.
    """
    for hint in CLI_HINTS.values():
        if message.endswith(f" ({hint})"):
            return message.removesuffix(f" ({hint})")
    return message


# reading and altering the database without the key -------------------------------


def _engine(db_url: str) -> Engine:
    return create_engine(db_url)


def dump_database(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: compare before and after to prove nothing changed."""
    engine = _engine(db_url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
                    for name, table in metadata.tables.items()}
    finally:
        engine.dispose()


def execute(db_url: str, *statements: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run SQL statements in one transaction, as someone with database access but no key.

    Returns the rows of the last statement (empty if it returns none).
    """
    engine = _engine(db_url)
    try:
        rows: list[tuple[Any, ...]] = []
        with engine.begin() as conn:
            for statement in statements:
                result = conn.execute(text(statement), params)
                rows = [tuple(r) for r in result] if result.returns_rows else []
        return rows
    finally:
        engine.dispose()


def audit_rows(db_url: str) -> list[dict[str, Any]]:
    """The audit trail read straight from its table, in sequence order, details parsed."""
    rows = execute(db_url, 'SELECT seq, at, "user", role, action, subject, reason, details, '
                           "prev_mac, mac FROM audit_events ORDER BY seq")
    keys = ("seq", "at", "user", "role", "action", "subject", "reason", "details",
            "prev_mac", "mac")
    events = [dict(zip(keys, row, strict=True)) for row in rows]
    for event in events:
        event["details"] = json.loads(event["details"])
    return events


def open_trial_vault(files: TrialFiles, key_file: Path | None = None) -> Vault:
    """The trial's vault, opened with its key file (for tests that act as the key holder)."""
    store = Store(files.db_url)
    try:
        with store.transaction() as session:
            return open_vault(load_trial(session), key_file or files.key_file)
    finally:
        store.dispose()


def write_key_file(path: Path, key: bytes, mode: int = 0o600) -> Path:
    """Write a key file by hand (base64 of ``key``) with ``mode``."""
    path.write_bytes(base64.b64encode(key) + b"\n")
    path.chmod(mode)
    return path
