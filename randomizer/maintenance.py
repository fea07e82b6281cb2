"""Schema upgrades, online backups and restores.

SQLite backups use SQLite's online backup API, so they are consistent while
other processes keep writing. PostgreSQL is backed up with ``pg_dump`` (see
docs/operations.md); either way a backup is checked the same way: the audit
chain and the allocation list must verify in the copy with the trial key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alembic import command
from sqlalchemy.engine import make_url

from randomizer import audit, rows
from randomizer.access import Permission
from randomizer.context import (
    MIGRATED_FROM,
    KeySource,
    Operation,
    Principal,
    load_trial,
    operation,
    vault_for,
)
from randomizer.errors import BackupFailed, Hint, IntegrityFailure, InvalidInput, StateError
from randomizer.store import SchemaStatus, Store, alembic_config, unversioned_message
from randomizer.trial import verify_list


@dataclass(frozen=True)
class BackupResult:
    """A finished, verified backup file."""

    file: str
    sha256: str
    audit_events: int


@dataclass(frozen=True)
class UpgradeResult:
    """Schema revision before and after ``db upgrade``."""

    before: str | None
    after: str


def sqlite_path(store: Store) -> Path:
    """The file of a SQLite store; other engines are refused."""
    url = make_url(store.engine.url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise StateError(
            "backup and restore handle SQLite files only; for PostgreSQL use "
            "pg_dump/pg_restore as docs/operations.md describes, then verify the "
            "copy's audit trail and allocation list",
            hint=Hint.VERIFY_COPY,
        )
    return Path(url.database)


def upgrade(op: Operation, store: Store) -> UpgradeResult:
    """Migrate the schema to this release's head inside the operation's transaction."""
    migrated: str | None = op.session.info.get(MIGRATED_FROM)
    before: SchemaStatus = store.status(op.session)
    if migrated is not None:
        # the operation migrated before it read any row (context._migrate)
        before = SchemaStatus(current=migrated, head=before.head, state="behind")
    if before.state == "ahead":
        raise StateError(
            f"the database schema ({before.current}) is newer than this "
            f"randomizer knows ({before.head}): use the newer release"
        )
    if before.state == "unversioned":
        raise StateError(unversioned_message(store.url))
    if before.state != "current" and migrated is None:
        command.upgrade(alembic_config(op.session.connection()), "head")
    after = store.status(op.session)
    details: dict[str, object] = {"before": before.current, "after": after.current}
    if before.current is not None and before.current < rows.SINCE_REVISION:
        # the migration has no key: the rows already there get their MACs now, with it,
        # and this event records them, so the trail accounts for every row from here on
        sealed = rows.seal_unsealed(op.session, op.vault)
        details["row_macs"] = {table: count for table, count in sealed.items() if count}
    op.audit("db.upgrade", details=details)
    return UpgradeResult(before=before.current, after=after.head)


SQLITE_HEADER = b"SQLite format 3\0"
"""The first 16 bytes of every SQLite database file."""


def _refuse_existing_backup(out: Path) -> None:
    if out.exists():
        raise InvalidInput(f"{out} already exists: refusing to overwrite a backup")


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy a live SQLite database with the online backup API and check the copy.

    A file system problem raises :class:`OSError` and a SQLite one
    :class:`sqlite3.DatabaseError`, for the caller to word; ``target`` is removed.
    """
    if target.exists():
        raise InvalidInput(f"{target} already exists: refusing to overwrite it")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        try:
            with dst:
                src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
            check = dst.execute("PRAGMA integrity_check").fetchone()
        finally:
            src.close()
            dst.close()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError("the copy fails SQLite's integrity check")
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def settle(path: Path) -> str:
    """Fold a SQLite file's WAL back into it (no side files) and return its SHA-256."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode = DELETE")
    finally:
        connection.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_copy(op: Operation) -> int:
    """Verify the audit chain of the database ``op`` runs on; the number of events."""
    return audit.verify(op.session, op.vault.audit_key()).events


def _verified_events(path: Path, trial_key: KeySource) -> int:
    """Check a copy's schema and audit chain with the trial key; the number of events."""
    copy = Store(f"sqlite:///{path}")
    try:
        with copy.transaction(read_only=True) as session:
            copy.check_schema(session)
            vault = vault_for(load_trial(session), trial_key())
            return audit.verify(session, vault.audit_key()).events
    finally:
        copy.dispose()


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _place(temporary: Path, out: Path) -> None:
    """Give the verified copy its name, never replacing a file that appeared meanwhile."""
    try:
        os.link(temporary, out)
    except FileExistsError:
        raise InvalidInput(f"{out} already exists: refusing to overwrite a backup") from None
    except OSError as exc:
        raise BackupFailed(f"cannot write the backup {out}: {exc.strerror or exc}") from None
    temporary.unlink()


def _record_failure(
    store: Store,
    trial_key: KeySource,
    principal: Principal,
    now: datetime,
    out: Path,
    error: BaseException,
) -> None:
    message = str(error) or type(error).__name__
    # The failure being reported matters more than this record of it: a trail that
    # cannot be written fails the next command loudly anyway.
    with (
        contextlib.suppress(Exception),
        operation(
            store, trial_key, principal, Permission.MAINTAIN, "backup", now, subject=str(out)
        ) as op,
    ):
        op.audit("backup.failed", subject=str(out), details={"error": message[:2000]})


def backup(
    store: Store, trial_key: KeySource, principal: Principal, now: datetime, out: Path
) -> BackupResult:
    """A consistent online copy of a SQLite trial database, verified with the key (admin).

    In this order: the login and role are checked; the copy is written to a
    temporary file beside ``out`` and verified (integrity, schema, audit chain
    with the key); then one transaction appends the ``backup`` event, with the
    copy's SHA-256, and gives the copy its name. So the trail never records a
    backup that does not exist, and the copy does not hold its own ``backup``
    event. A copy that fails is removed and recorded as ``backup.failed``.
    """
    source = sqlite_path(store)
    _refuse_existing_backup(out)
    with operation(
        store, trial_key, principal, Permission.MAINTAIN, "backup", now, subject=str(out)
    ):
        pass  # the role is checked (and a fresh login recorded) before anything is copied
    principal = dataclasses.replace(principal, fresh_login=False)
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            copy_sqlite(source, temporary)
            events = _verified_events(temporary, trial_key)
            digest = settle(temporary)
        except OSError as exc:
            raise BackupFailed(f"cannot write the backup {out}: {exc.strerror or exc}") from None
        except sqlite3.DatabaseError as exc:
            raise BackupFailed(f"cannot copy the database to {out}: {exc}") from None
    except BaseException as exc:
        _remove(temporary)
        if isinstance(exc, Exception):
            _record_failure(store, trial_key, principal, now, out, exc)
        raise
    placed = False
    try:
        with operation(
            store, trial_key, principal, Permission.MAINTAIN, "backup", now, subject=str(out)
        ) as op:
            op.audit("backup", subject=str(out), details={"sha256": digest, "audit_events": events})
            _place(temporary, out)
            placed = True
    except BaseException as exc:
        _remove(temporary)
        if placed:  # the commit failed: no event names it, so no file may stay
            out.unlink(missing_ok=True)
        elif isinstance(exc, BackupFailed):
            _record_failure(store, trial_key, principal, now, out, exc)
        raise
    return BackupResult(file=str(out), sha256=digest, audit_events=events)


def restore(
    store: Store,
    trial_key: KeySource,
    login: Callable[[], Principal],
    now: datetime,
    backup_file: Path,
) -> BackupResult:
    """Bring a backup back as ``store``'s (new) SQLite file, verified and audited (admin).

    ``login`` is called once the copy is in place, since the user is checked
    against the restored database. The copy must pass audit and list
    verification with the trial key; otherwise nothing is left behind.
    """
    target = sqlite_path(store)
    if not backup_file.is_file():
        raise InvalidInput(f"backup file {backup_file} not found")
    data = backup_file.read_bytes()
    if not data.startswith(SQLITE_HEADER):
        raise InvalidInput(
            f"backup file {backup_file} is not a SQLite database: restore takes "
            "a file written by a randomizer backup"
        )
    digest = hashlib.sha256(data).hexdigest()
    try:
        copy_sqlite(backup_file, target)
    except OSError as exc:
        raise BackupFailed(f"cannot write {target}: {exc.strerror or exc}") from None
    except sqlite3.DatabaseError as exc:
        raise BackupFailed(f"backup file {backup_file} is damaged: {exc}") from None
    try:
        with operation(store, trial_key, login(), Permission.MAINTAIN, "restore", now) as op:
            events = verify_copy(op)
            _tables, problems = rows.check_tables(op.session, op.vault)
            if problems:
                more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
                raise IntegrityFailure(
                    "the backup fails verification: " + "; ".join(problems[:3]) + more
                )
            verify_list(op)
            op.audit("restore", subject=str(backup_file), details={"sha256": digest})
    except BaseException:
        store.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        raise
    return BackupResult(file=str(target), sha256=digest, audit_events=events)
