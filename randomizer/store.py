"""Database engine and transactions: SQLite by default, any SQLAlchemy URL accepted.

SQLite runs in WAL mode with ``synchronous=FULL`` (a committed randomization
survives power loss), foreign keys on, and every transaction opened with
``BEGIN IMMEDIATE`` so writers queue instead of failing half-way. Its files are
private to their owner: the database is created with mode 0600 (SQLite gives
its -wal and -shm files the database's mode) and a looser file of ours is
tightened when opened. PostgreSQL runs at READ COMMITTED with explicit row
locks (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
    SAWarning,
)
from sqlalchemy.orm import Session, sessionmaker

from randomizer.errors import Busy, Hint, RandomizerError, StoreError

if TYPE_CHECKING:
    # alembic is imported where a schema is read or made: the remote client imports
    # this module (for its value types) and never touches a schema
    from alembic.config import Config

DEFAULT_URL = "sqlite:///randomizer.db"
BUSY_TIMEOUT_MS = 30_000


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook issue BEGIN IMMEDIATE instead of pysqlite's
    # deferred BEGIN, which would fail with SQLITE_BUSY on the first write.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    files = [row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main"]
    cursor.close()
    if files and files[0]:
        for suffix in ("", "-wal", "-shm"):
            _make_private(Path(files[0] + suffix))


def _create_private(path: Path, *_args: Any) -> None:
    # SQLite would create a missing file with the umask's mode (0644 as a rule):
    # create it empty and private first, so it is never readable by others, not
    # even for a moment (permissions are checked when a file is opened, not after)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        pass  # there already, or SQLite's own open says why it cannot be


def _make_private(path: Path) -> None:
    """Take group and other access away from a SQLite file of this process's user."""
    if os.name == "nt":
        return  # no mode bits: a Windows folder's ACL decides who reads it
    try:
        status = path.stat()
        if status.st_uid == os.geteuid() and stat.S_IMODE(status.st_mode) & 0o077:
            path.chmod(stat.S_IMODE(status.st_mode) & 0o700)
    except OSError:
        pass  # not there (yet), or not ours: nothing this process may change


READ_ONLY = "randomizer_read_only"
"""Execution option marking a read transaction (no write lock taken on SQLite)."""


def _on_sqlite_begin(connection: Any) -> None:
    # A read (login check, schema status) must not queue behind writers for the
    # write lock, nor hold it while a password hash is computed.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _on_postgresql_connect(dbapi_connection: Any, _record: Any) -> None:
    # Bounded waits: a row lock held too long (a stuck client) ends in a clear
    # "busy" error instead of a hang; psycopg 3 runs this outside a transaction.
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = {BUSY_TIMEOUT_MS}")
    dbapi_connection.commit()


_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer_lock(path: Path) -> threading.RLock:
    """The process's one lock for writers of the SQLite file at ``path``.

    SQLite lets one writer in at a time; the others wait in its busy handler, which
    sleeps and polls with growing sleeps (up to 100 ms each), so under load a writer
    may sleep long after the lock came free, and whoever polls first wins. Threads of
    one process (the trial server's worker threads) queue on this lock instead and are
    woken as soon as the writer before them ends. Writers in other processes still
    meet at SQLite's own lock. Re-entrant, so a nested write transaction of one
    thread behaves as it did without it (it waits in SQLite's busy handler).
    """
    key = os.path.realpath(path)
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(key, threading.RLock())


class Store:
    """An open database: engine, session factory and one-transaction helper."""

    def __init__(self, url: str = DEFAULT_URL, create: bool = False) -> None:
        """Open ``url``; a SQLite file must already exist unless ``create`` (init, restore)."""
        shown = url
        try:
            parsed = make_url(url)
            shown = parsed.render_as_string(hide_password=True)  # never echo a password
            if parsed.host:
                # the driver would ask the resolver, which raises UnicodeError for a host
                # no name can encode ("@\xad": an empty label once IDNA drops the character)
                parsed.host.encode("idna")
            with warnings.catch_warnings():
                # e.g. "?mode=ro" on SQLite, silently ignored: refuse it, not warn on stderr
                warnings.simplefilter("error", SAWarning)
                self.engine: Engine = create_engine(parsed)
        except (ArgumentError, NoSuchModuleError, ValueError, ImportError, SAWarning) as exc:
            raise StoreError(f"cannot use database URL {shown!r}: {_first_line(exc)}") from None
        self.url = parsed.render_as_string(hide_password=True)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        database = parsed.database or ""
        if (
            self.is_sqlite
            and not create
            and database not in ("", ":memory:")
            and not Path(database).exists()
        ):
            # SQLite would create an empty file for a mistyped --db: refuse instead
            raise StoreError(
                f"no randomizer trial at {self.url}: the file does not exist; "
                "check the database location, or create the trial first",
                hint=Hint.MISSING_DATABASE,
            )
        if self.is_sqlite:
            if create and database not in ("", ":memory:") and not parsed.query.get("uri"):
                event.listen(
                    self.engine, "do_connect", functools.partial(_create_private, Path(database))
                )
            event.listen(self.engine, "connect", _on_sqlite_connect)
            event.listen(self.engine, "begin", _on_sqlite_begin)
        elif self.engine.dialect.name == "postgresql":
            event.listen(self.engine, "connect", _on_postgresql_connect)
        self._write_lock: threading.RLock | None = None
        if self.is_sqlite and database not in ("", ":memory:") and not parsed.query.get("uri"):
            self._write_lock = _writer_lock(Path(database))
        self._versioned = False
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def transaction(self, read_only: bool = False) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception.

        A ``read_only`` transaction takes no write lock on SQLite (a deferred
        BEGIN); it must not write.
        """
        factory = self._read_sessions if read_only else self._sessions
        writers = None if read_only else self._write_lock
        if writers is not None and not writers.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            raise Busy(f"the database stayed busy for {BUSY_TIMEOUT_MS // 1000} s: try again")
        try:
            with factory() as session, session.begin():
                yield session
        except OperationalError as exc:
            raise _store_error(exc, self.url) from None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreError(f"lost the database connection: {_first_line(exc.orig)}") from None
            raise
        finally:
            if writers is not None:
                writers.release()

    def has_schema(self) -> bool:
        """Whether the database already holds randomizer tables."""
        try:
            with self.engine.connect() as conn:
                found = inspect(conn)
                return found.has_table("alembic_version") or found.has_table("trial")
        except OperationalError as exc:
            raise _store_error(exc, self.url) from None

    def create_schema(self, session: Session) -> None:
        """Create every table by running all migrations (inside ``session``'s transaction)."""
        from alembic import command

        command.upgrade(alembic_config(session.connection()), "head")

    def status(self, session: Session) -> SchemaStatus:
        """The database's schema revision and the one this randomizer expects."""
        connection = session.connection()
        head, known = _revisions(script_location())
        current = None
        if self._versioned:
            # every action asks: once this store has seen the revision table, one plain
            # read replaces alembic's catalogue queries (a fifth of a randomization's CPU)
            current = connection.execute(_READ_REVISION).scalar()
        if current is None:
            from alembic.runtime.migration import MigrationContext

            current = MigrationContext.configure(connection).get_current_revision()
            self._versioned = current is not None
        if current is None:
            # tables without a revision row are not "empty": 'init' would refuse them
            state = "unversioned" if inspect(connection).has_table("trial") else "empty"
        else:
            state = "current" if current == head else "behind" if current in known else "ahead"
        return SchemaStatus(current=current, head=head, state=state)

    def check_schema(self, session: Session) -> None:
        """Refuse a database that is empty, behind or ahead of this randomizer's schema."""
        status = self.status(session)
        if status.state == "empty":
            raise StoreError(
                f"no randomizer trial in {self.url}: create the trial first", hint=Hint.INIT
            )
        if status.state == "unversioned":
            raise StoreError(unversioned_message(self.url))
        if status.state == "behind":
            raise StoreError(
                f"the database schema ({status.current}) is behind this "
                f"randomizer ({status.head}): take a backup, then an admin "
                "upgrades the database schema",
                hint=Hint.UPGRADE_SCHEMA,
            )
        if status.state == "ahead":
            raise StoreError(
                f"the database schema ({status.current}) is newer than this "
                f"randomizer knows ({status.head}): use the newer release"
            )


def unversioned_message(url: str) -> str:
    """The refusal of a database that holds tables but no schema revision."""
    return (
        f"{url} holds randomizer tables but no schema revision (alembic_version is "
        "empty): restore a backup, see docs/operations.md"
    )


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands: ``current``, ``behind``, ``ahead``, ``empty``,
    or ``unversioned`` (tables but no revision row)."""

    current: str | None
    head: str
    state: str


@functools.lru_cache(maxsize=8)
def _revisions(location: str | None) -> tuple[str, frozenset[str]]:
    # Reading the migration scripts compiles every revision file: do it once per
    # process, not on every command (it was a fifth of a randomization's cost).
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", location or "")
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    assert head is not None
    return head, frozenset(rev.revision for rev in script.walk_revisions())


_READ_REVISION = text("SELECT version_num FROM alembic_version")


def script_location() -> str:
    """Where this release's migration scripts are."""
    return _PACKAGE_SCRIPTS


_PACKAGE_SCRIPTS = str(resources.files("randomizer").joinpath("migrations"))


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration for this package's migrations, run on ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location())
    config.attributes["connection"] = connection
    return config


def _first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else "unknown error"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _store_error(exc: OperationalError, url: str) -> RandomizerError:
    message = _first_line(exc.orig)
    if _is_busy(exc.orig):
        return Busy(f"the database stayed busy for {BUSY_TIMEOUT_MS // 1000} s: try again")
    return StoreError(f"database error in {url}: {message}")


def _is_busy(error: BaseException | None) -> bool:
    """Whether the engine gave up waiting for a lock, told by its error code.

    Not by the message: a server's refusal quotes names the user chose, so
    'role "locked_out" does not exist' must not pass for a busy database.
    """
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:  # the primary code is the low byte (SQLITE_BUSY_SNAPSHOT is 517)
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return getattr(error, "sqlstate", None) == "55P03"  # lock_not_available (lock_timeout)
