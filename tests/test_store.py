"""The store: SQLite settings, write locks, busy databases, schema versions, URLs, types."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError

from randomizer import store as store_module
from randomizer.errors import StoreError
from randomizer.models import Kit, User, UTCDateTime
from randomizer.store import Store
from tests.support.assertions import assert_error
from tests.support.database import dump_database, execute
from tests.support.trial import ADMIN, Run, TrialFiles


@pytest.fixture
def store(trial_with_users: TrialFiles) -> Iterator[Store]:
    opened = Store(trial_with_users.db_url)
    yield opened
    opened.dispose()


# SQLite: durability and locking ---------------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_full_sync_and_foreign_keys(
    store: Store, sqlite_only: None
) -> None:
    with store.engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 30_000,
    }


def test_a_transaction_holds_the_write_lock_from_its_first_statement(
    store: Store, trial_with_users: TrialFiles, sqlite_only: None
) -> None:
    assert trial_with_users.db_path is not None
    other = sqlite3.connect(trial_with_users.db_path, timeout=0, isolation_level=None)
    try:
        with store.transaction() as session:
            session.scalars(select(User)).all()  # only a read so far
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again after commit
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_database_that_stays_busy_is_refused(
    trial_with_users: TrialFiles, run: Run, monkeypatch: pytest.MonkeyPatch, sqlite_only: None
) -> None:
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 50)
    assert trial_with_users.db_path is not None
    before = dump_database(trial_with_users.db_url)
    holder = sqlite3.connect(trial_with_users.db_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = run(
            "user",
            "add",
            "newbie",
            "--role",
            "monitor",
            "--password-stdin",
            user=ADMIN,
            input="pw-newbie-123456\n",
        )
        assert_error(result, 1, "the database stayed busy for ", "try again")
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert dump_database(trial_with_users.db_url) == before


def test_threads_of_one_process_queue_for_the_write_lock_instead_of_failing_busy(
    store: Store, sqlite_only: None
) -> None:
    # no busy handler at all: a writer that met SQLite's lock would fail at once; the
    # process's writer lock makes the threads take turns instead
    event.listen(
        store.engine,
        "connect",
        lambda connection, _record: connection.execute("PRAGMA busy_timeout = 0"),
    )
    store.dispose()
    failures: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for turn in range(15):
                with store.transaction() as session:
                    session.execute(update(User).where(User.name == ADMIN).values(disabled=False))
                    time.sleep(0.001 * ((index + turn) % 3))  # hold the lock a little
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_the_writer_lock_is_one_per_file_held_by_write_transactions_only(
    store: Store, trial_with_users: TrialFiles, sqlite_only: None
) -> None:
    other = Store(trial_with_users.db_url)
    try:
        lock = store._write_lock
        assert lock is not None and other._write_lock is lock
        with store.transaction(read_only=True):
            assert lock.acquire(blocking=False)  # a reader does not hold it
            lock.release()
        with pytest.raises(RuntimeError, match="half-way"), store.transaction():
            assert _held_elsewhere(lock)
            raise RuntimeError("half-way")
        assert not _held_elsewhere(lock)  # released after a failed transaction too
    finally:
        other.dispose()


def _held_elsewhere(lock: threading.RLock) -> bool:
    """Whether another thread would have to wait for ``lock``."""
    free: list[bool] = []

    def probe() -> None:
        got = lock.acquire(blocking=False)
        if got:
            lock.release()
        free.append(got)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return not free[0]


def test_a_failed_transaction_leaves_nothing_behind(
    store: Store, trial_with_users: TrialFiles
) -> None:
    before = dump_database(trial_with_users.db_url)
    with pytest.raises(RuntimeError, match="half-way"), store.transaction() as session:
        session.add(
            User(
                name="ghost",
                role="admin",
                password_hash="x",
                disabled=False,
                created_at=datetime.now(UTC),
            )
        )
        session.flush()
        raise RuntimeError("half-way")
    assert dump_database(trial_with_users.db_url) == before


def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(IntegrityError), store.transaction() as session:
        session.add(Kit(code="AAAA-AAAA", content_sealed=b"x", slot_id=999_999, visit=1))
        session.flush()


# Schema versions ---------------------------------------------------------------------------


def test_the_schema_records_its_revision(trial_with_users: TrialFiles, store: Store) -> None:
    [(revision,)] = execute(trial_with_users.db_url, "SELECT version_num FROM alembic_version")
    with store.transaction() as session:
        status = store.status(session)
    assert (status.current, status.state) == (revision, "current")
    assert status.head == revision


def test_a_database_of_an_unknown_newer_schema_is_refused(
    trial_with_users: TrialFiles, run: Run, store: Store
) -> None:
    with store.transaction() as session:
        head = store.status(session).head
    execute(trial_with_users.db_url, "UPDATE alembic_version SET version_num = 'f00dfeed9999'")
    before = dump_database(trial_with_users.db_url)
    for argv in (["user", "list"], ["audit", "verify"], ["list", "generate"]):
        assert assert_error(run(*argv, user=ADMIN), 1) == (
            f"the database schema (f00dfeed9999) is newer than this randomizer knows "
            f"({head}): use the newer release"
        )
    assert dump_database(trial_with_users.db_url) == before


# URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "nosuchdb://admin:hunter2-secret@db.example/trial",
        "postgresql+psycopg://admin:hunter2-secret@127.0.0.1:1/trial",
    ],
)
def test_a_database_password_is_never_shown(
    url: str, trial_with_users: TrialFiles, run: Run
) -> None:
    result = run("user", "list", user=ADMIN, db=url)
    assert_error(result, 1)
    assert "hunter2" not in result.output


def test_the_store_shows_its_url_without_the_password() -> None:
    shown = Store("postgresql+psycopg://admin:hunter2-secret@127.0.0.1:1/trial")
    assert shown.url == "postgresql+psycopg://admin:***@127.0.0.1:1/trial"
    shown.dispose()


def test_store_error_names_the_url() -> None:
    with pytest.raises(StoreError, match=r"^cannot use database URL 'nosuchdb://x': "):
        Store("nosuchdb://x")


# Types -------------------------------------------------------------------------------------


def test_times_are_stored_as_utc_and_read_back_aware(store: Store) -> None:
    warsaw = timezone(timedelta(hours=2))
    local = datetime(2026, 6, 1, 14, 30, 0, 250, tzinfo=warsaw)
    with store.transaction() as session:
        session.add(
            User(name="tz", role="monitor", password_hash="x", disabled=False, created_at=local)
        )
    with store.transaction() as session:
        created = session.scalars(select(User.created_at).where(User.name == "tz")).one()
    assert created == local
    assert created.tzinfo == UTC
    assert created.hour == 12


def test_naive_times_are_refused() -> None:
    column = UTCDateTime()
    with pytest.raises(ValueError, match="timezone-aware"):
        column.process_bind_param(datetime(2026, 1, 1), dialect=None)  # type: ignore[arg-type]
    assert column.process_bind_param(None, dialect=None) is None  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a datetime"):
        column.process_result_value("2026-01-01", dialect=None)  # type: ignore[arg-type]
