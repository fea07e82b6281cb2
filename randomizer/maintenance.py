"""Schema upgrades, online backups and restores.

SQLite backups use SQLite's online backup API, so they are consistent while
other processes keep writing. PostgreSQL is backed up with ``pg_dump`` (see
docs/operations.md); either way a backup is checked the same way: the audit
chain and the allocation list must verify in the copy with the trial key.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alembic import command
from sqlalchemy.engine import make_url

from randomizer import audit
from randomizer.access import Permission
from randomizer.context import KeySource, Operation, Principal, load_trial, operation, vault_for
from randomizer.errors import Hint, InvalidInput, StateError
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
        raise StateError("backup and restore handle SQLite files only; for PostgreSQL use "
                         "pg_dump/pg_restore as docs/operations.md describes, then verify the "
                         "copy's audit trail and allocation list", hint=Hint.VERIFY_COPY)
    return Path(url.database)


def upgrade(op: Operation, store: Store) -> UpgradeResult:
    """Migrate the schema to this release's head inside the operation's transaction."""
    before: SchemaStatus = store.status(op.session)
    if before.state == "ahead":
        raise StateError(f"the database schema ({before.current}) is newer than this "
                         f"randomizer knows ({before.head}): use the newer release")
    if before.state == "unversioned":
        raise StateError(unversioned_message(store.url))
    if before.state != "current":
        command.upgrade(alembic_config(op.session.connection()), "head")
    after = store.status(op.session)
    op.audit("db.upgrade", details={"before": before.current, "after": after.current})
    return UpgradeResult(before=before.current, after=after.head)


def record_backup(op: Operation, store: Store, out: Path) -> None:
    """Check the target and write the backup's audit event (so the copy contains it)."""
    sqlite_path(store)
    if out.exists():
        raise InvalidInput(f"{out} already exists: refusing to overwrite a backup")
    op.audit("backup", subject=str(out))


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy a live SQLite database with the online backup API and check the copy."""
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
            raise StateError(f"the copy in {target} fails SQLite's integrity check")
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


def backup(store: Store, trial_key: KeySource, principal: Principal, now: datetime,
           out: Path) -> BackupResult:
    """A consistent online copy of a SQLite trial database, verified with the key (admin)."""
    source = sqlite_path(store)
    with operation(store, trial_key, principal, Permission.MAINTAIN, "backup", now,
                   subject=str(out)) as op:
        record_backup(op, store, out)
    copy_sqlite(source, out)
    copy = Store(f"sqlite:///{out}")
    try:
        with copy.transaction(read_only=True) as session:
            copy.check_schema(session)
            vault = vault_for(load_trial(session), trial_key())
            events = audit.verify(session, vault.audit_key()).events
    except BaseException:
        copy.dispose()
        out.unlink(missing_ok=True)
        raise
    copy.dispose()
    return BackupResult(file=str(out), sha256=settle(out), audit_events=events)


def restore(store: Store, trial_key: KeySource, login: Callable[[], Principal], now: datetime,
            backup_file: Path) -> BackupResult:
    """Bring a backup back as ``store``'s (new) SQLite file, verified and audited (admin).

    ``login`` is called once the copy is in place, since the user is checked
    against the restored database. The copy must pass audit and list
    verification with the trial key; otherwise nothing is left behind.
    """
    target = sqlite_path(store)
    if not backup_file.is_file():
        raise InvalidInput(f"backup file {backup_file} not found")
    digest = hashlib.sha256(backup_file.read_bytes()).hexdigest()
    copy_sqlite(backup_file, target)
    try:
        with operation(store, trial_key, login(), Permission.MAINTAIN, "restore", now) as op:
            events = verify_copy(op)
            verify_list(op)
            op.audit("restore", subject=str(backup_file), details={"sha256": digest})
    except BaseException:
        store.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        raise
    return BackupResult(file=str(target), sha256=digest, audit_events=events)
