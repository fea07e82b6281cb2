"""A test's trial driven through the CLI: its files, users, the runner, prepared stages.

:class:`Run` invokes ``cli`` in-process for one trial; :func:`build_trial`
brings a new trial to a stage (admin only, one user per role, the generated
list); :class:`TrialTemplates` builds such a trial once per session on SQLite
and copies it into each test; :func:`scratch_trial` gives a fixture wider
than one test a trial of its own.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from randomizer import access
from randomizer.commands import cli
from randomizer.context import load_trial, open_vault
from randomizer.signatures import Signature, meaning_of
from randomizer.store import Store
from randomizer.vault import Vault
from tests.support.assertions import assert_ok
from tests.support.database import execute, fold_wal, scratch_db_url
from tests.support.exosome import DESIGN_NAME

T = TypeVar("T")

FAST_SCRYPT_N = 2**10
"""scrypt cost of the tests' password hashes: cheap (the parameters are stored with each hash,
so verification stays exact)."""

ADMIN = "alice"
USERS: Mapping[str, str] = {
    "alice": "admin",
    "ivan": "investigator",
    "petra": "pharmacist",
    "stan": "statistician",
    "mona": "monitor",
}
"""The users of a trial at stage ``users`` or ``list``, name -> role."""

GENERATOR_PASSWORD = "pw-second-admin-123456"
"""The password of the ``draft`` stage's second admin."""

USER_OF_ROLE: Mapping[str, str] = {role: name for name, role in USERS.items()}
PASSWORDS: Mapping[str, str] = {name: f"pw-{role}-123456" for name, role in USERS.items()}
"""Each user's password (at least 12 characters)."""

_UNSET_ENV: dict[str, str | None] = {
    "RANDOMIZER_PASSWORD": None,
    "RANDOMIZER_USER": None,
    "RANDOMIZER_DB": None,
    "RANDOMIZER_KEY_FILE": None,
    "RANDOMIZER_SERVER": None,
    "RANDOMIZER_DEBUG": None,
    "RANDOMIZER_TEST_FAULT": None,  # in-process, a crash-test hook would kill pytest itself
}


def invoke_cli(
    runner: CliRunner,
    connection: list[str],
    args: tuple[str, ...],
    *,
    user: str | None,
    password: str | None,
    input: str | None,
    env: Mapping[str, str | None] | None,
) -> Result:
    """The root command in-process: ``connection`` options, ``--user``, then ``args``.

    No RANDOMIZER_ variable of the caller's shell leaks in; RANDOMIZER_PASSWORD
    is ``user``'s password from :data:`PASSWORDS` unless ``password`` is given,
    and ``env`` adds or unsets (None) variables last.
    """
    argv = [*connection, *(["--user", user] if user is not None else [])]
    if password is None and user is not None:
        password = PASSWORDS.get(user)
    environment = {**_UNSET_ENV, "RANDOMIZER_PASSWORD": password, **(env or {})}
    return runner.invoke(cli, [*argv, *args], input=input, env=environment, prog_name="randomizer")


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


class Run:
    """Invoke ``cli`` in-process with --db and --key-file of one trial.

    ``run("user", "list", user="alice")`` passes ``--user alice`` and sets
    RANDOMIZER_PASSWORD to that user's password from :data:`PASSWORDS` unless
    ``password`` is given; ``env={"RANDOMIZER_PASSWORD": None}`` unsets it.
    ``db`` and ``key_file`` override the trial's. Returns the click Result
    (``stdout``, ``stderr`` and ``output`` apart, click 8.2+).
    """

    def __init__(self, files: TrialFiles) -> None:
        self.files = files
        self.runner = CliRunner()

    def __call__(
        self,
        *args: str,
        user: str | None = None,
        password: str | None = None,
        input: str | None = None,
        db: str | None = None,
        key_file: Path | str | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> Result:
        connection = [
            "--db",
            db or self.files.db_url,
            "--key-file",
            str(key_file or self.files.key_file),
        ]
        return invoke_cli(
            self.runner, connection, args, user=user, password=password, input=input, env=env
        )

    def ok(self, *args: str, **kwargs: Any) -> Result:
        """Invoke and assert success."""
        result = self(*args, **kwargs)
        assert_ok(result)
        return result

    def init(self, admin: str = ADMIN, design: str = DESIGN_NAME) -> Result:
        """``init`` the trial with its first admin."""
        result = self.ok(
            "init",
            "--design",
            design,
            "--admin",
            admin,
            env={"RANDOMIZER_PASSWORD": PASSWORDS.get(admin, "pw-admin-123456")},
        )
        self.files.users[admin] = "admin"
        return result

    def add_user(
        self, name: str, role: str, password: str | None = None, actor: str = ADMIN
    ) -> Result:
        """Add a user through the CLI as ``actor``."""
        result = self.ok(
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            user=actor,
            input=(password or PASSWORDS[name]) + "\n",
        )
        self.files.users[name] = role
        return result


STAGES = ("init", "users", "draft", "list")
"""How far a prepared trial goes: admin only, one user per role, a draft list generated by a
second admin (:data:`GENERATOR`), the generated and approved list."""

GENERATOR = "ada"
"""The second admin who generates the list of the ``draft`` stage, so that alice (admin) and
stan (statistician) may both approve it."""

LIST_AGE = timedelta(days=1000)
"""How long ago a prepared trial's list was generated: before any date a test randomizes on
(a randomization dated before the list is refused)."""


def backdate_list(files: TrialFiles, age: timedelta = LIST_AGE) -> datetime:
    """Date the list's generation ``age`` back, as if the trial had begun long ago; returns
    the new time.

    Behind the service's back: the ``list.generate`` audit event keeps its real time.
    """
    at = datetime.now(UTC) - age
    execute(
        files.db_url,
        "UPDATE trial SET list_generated_at = :at",
        at=at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds"),
    )
    return at


def build_trial(run: Run, stage: str) -> None:
    """Bring a new trial to ``stage`` through the CLI (a list is dated :data:`LIST_AGE` back)."""
    run.init()
    if stage in ("users", "draft", "list"):
        for name, role in USERS.items():
            if name != ADMIN:
                run.add_user(name, role)
    if stage == "draft":
        run.add_user(GENERATOR, "admin", GENERATOR_PASSWORD)
        run.ok("list", "generate", user=GENERATOR, password=GENERATOR_PASSWORD)
        backdate_list(run.files)
    if stage == "list":
        run.ok("list", "generate", user=ADMIN)
        approve_list(run)
        backdate_list(run.files)


APPROVER = "stan"
"""Who approves a prepared trial's list: a statistician, not the admin who generated it."""


def signature(user: str, action: str, password: str | None = None) -> Signature:
    """``user``'s electronic signature of ``action`` (their password from :data:`PASSWORDS`)."""
    known = {**PASSWORDS, GENERATOR: GENERATOR_PASSWORD}
    return Signature(known[user] if password is None else password, meaning_of(action))


def approve_list(run: Run, approver: str = APPROVER) -> Result:
    """Approve the trial's draft list as ``approver`` (added as a statistician if missing)."""
    if approver not in run.files.users:
        run.add_user(approver, USERS.get(approver, "statistician"))
    return run.ok("list", "approve", user=approver)


@contextmanager
def scratch_trial(directory: Path) -> Iterator[Run]:
    """The CLI bound to a new trial in ``directory``, for a fixture wider than one test.

    The database is :func:`~tests.support.database.scratch_db_url`'s; password
    hashes are cheap until the block ends (the per-test fixture does not reach here).
    """
    with pytest.MonkeyPatch.context() as patch, scratch_db_url(directory) as url:
        patch.setattr(access, "SCRYPT_N", FAST_SCRYPT_N)
        yield Run(TrialFiles(db_url=url, key_file=directory / "trial.key", directory=directory))


class TrialTemplates:
    """SQLite trials built once per session and copied into each test's files.

    Building one through the CLI takes a few hundred milliseconds; copying a
    file takes one. Every copy shares the template's keys and seed, which no
    test relies on being unique. On PostgreSQL each test builds its own trial.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, tuple[TrialFiles, object]] = {}

    def install(self, name: str, run: Run, build: Callable[[Run], T]) -> T:
        """Bring ``run``'s new trial to what ``build`` makes of one; returns what it returned.

        ``name`` names the template: the same name must always mean the same ``build``.
        """
        files = run.files
        if files.db_path is None:
            return build(run)
        if name not in self.built:
            self.built[name] = self._build(name, build)
        template, value = self.built[name]
        assert template.db_path is not None
        shutil.copy2(template.db_path, files.db_path)
        shutil.copy2(template.key_file, files.key_file)  # keeps mode 0600
        files.users.update(template.users)
        return cast(T, value)

    def stage(self, stage: str, run: Run) -> TrialFiles:
        """``run``'s trial at one of :data:`STAGES`."""
        self.install(stage, run, lambda new: build_trial(new, stage))
        return run.files

    def _build(self, name: str, build: Callable[[Run], object]) -> tuple[TrialFiles, object]:
        directory = self.root / name
        directory.mkdir()
        with scratch_trial(directory) as run:
            assert run.files.db_path is not None
            value = build(run)
        fold_wal(run.files.db_path)
        return run.files, value


def all_commands() -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and group of the CLI with its path (the root is the empty path)."""

    def walk(
        command: click.Command, path: tuple[str, ...]
    ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
        yield path, command
        if isinstance(command, click.Group):
            context = click.Context(command)  # the root loads its lazy commands here
            for name in command.list_commands(context):
                sub = command.get_command(context, name)
                assert sub is not None, f"{' '.join((*path, name))} is listed but not found"
                yield from walk(sub, (*path, name))

    yield from walk(cli, ())


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
