"""Key rotation that revokes: a new trial key, a new data key, every sealed value sealed again.

``key rotate`` (admin) runs in one transaction:

1. the trial row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write lock
   is already held) and must still hold the key material this operation opened;
2. the new trial key is written to the new key file, which must not exist (created
   exclusively, mode 0600, the file and its directory fsynced);
3. a new random data key is drawn, and every sealed value of every kind in
   :data:`randomizer.sealed.SEALED_WIDTHS` is opened with the old data key and sealed
   again under the new one, a chunk of rows at a time (:data:`RESEAL_CHUNK`);
4. the audit MAC key and the row MAC key are kept as they are: a key format 1 trial's
   keys, derived from the old data key, are captured before that data key is dropped.
   The data key and both MAC keys are wrapped under the new trial key, each on its own
   (key format 2), so the audit chain, its checkpoints and the row MACs keep verifying;
5. the new key file is read back from disk and must open the new key material;
6. the ``key.rotate`` event is appended, and the transaction commits.

Afterwards the old key file opens nothing in the database: it does not unwrap the new
wrapped keys, and the old data key (which the old key file and an old backup still
yield) opens no sealed value. The MAC keys are the one thing an old key file and an old
backup still give: rotation protects what is sealed, not the chain (signed checkpoints
kept away from the server do that).

Crash safety: the new key file is durable on disk before the transaction commits, and
the database changes all at once or not at all. A crash before the commit leaves the
old key opening the old database (and a new key file that opens nothing, to be removed);
a crash after it leaves the new key file opening the new database, with the old key
file still in place until the admin moves it away. :func:`discard_new_key_file` removes
the new key file after a failed rotation only when the database provably does not need
it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from randomizer.context import Operation, load_trial
from randomizer.errors import InvalidInput, SealedDataError, StateError, StoreError
from randomizer.models import Kit, Slot, Stratum, Trial
from randomizer.sealed import (
    KIT_KIND,
    SEALED_WIDTHS,
    SEED_KIND,
    SLOT_KIND,
    kit_row,
    open_seed_text,
    seal_seed,
    slot_row,
)
from randomizer.store import Store
from randomizer.vault import (
    KeyMaterial,
    Vault,
    create_key_file,
    new_data_key,
    open_keys,
    read_key_file,
    unwrap_data_key,
    wrap_keys,
)

RESEAL_CHUNK = 10_000
"""Sealed values read, sealed again and written at a time."""


@dataclass(frozen=True)
class Rotation:
    """A finished rotation: where the new key file is and what was sealed again."""

    new_key_file: str
    key_format_before: int
    key_format_after: int
    resealed: dict[str, int]
    """Sealed values sealed again, by kind."""


def lock_keys(op: Operation) -> None:
    """Lock the trial row and check that it still holds the keys this operation opened.

    Whoever writes sealed values calls it first. On PostgreSQL a rotation committed
    between this operation's start and now would otherwise leave values sealed under
    a data key no longer stored; the lock also makes a rotation wait for such a writer.
    """
    stored = op.session.execute(
        select(Trial.wrapped_data_key).where(Trial.id == op.trial.id).with_for_update()
    ).scalar_one()
    if bytes(stored) != bytes(op.trial.wrapped_data_key):
        raise StateError(
            "the trial key was rotated while this command ran: nothing was changed; "
            "run it again with the new key file"
        )


def rotate_key(op: Operation, current_key_file: Path, new_key_file: Path) -> Rotation:
    """Make a new trial key and data key, seal every sealed value again, keep the MAC keys.

    See the module's docstring for the steps and what a crash leaves. The caller removes
    the new key file after a failure with :func:`discard_new_key_file`.
    """
    if new_key_file.resolve() == current_key_file.resolve():
        raise InvalidInput("the new key file must be a new path, not the current key file")
    if set(RESEALERS) != set(SEALED_WIDTHS):
        raise RuntimeError(
            "key rotation does not know where every kind of sealed value is stored: "
            "add the new kind to rotation.RESEALERS"
        )
    _check_privileges(op)
    lock_keys(op)
    old_vault = op.vault
    key_format_before = op.trial.key_format
    new_key = create_key_file(new_key_file)
    data_key = new_data_key()
    # the MAC keys stay: a key format 1 trial's are derived from the old data key, so
    # they are taken from the open vault before that data key is gone
    audit_key, row_key = old_vault.audit_key(), old_vault.row_key
    new_vault = Vault(data_key, op.trial.id, audit_key=audit_key, row_key=row_key)
    resealed = {kind: RESEALERS[kind](op, old_vault, new_vault) for kind in sorted(RESEALERS)}
    material = wrap_keys(new_key, data_key, audit_key, row_key)
    trial = op.trial
    trial.wrapped_data_key = material.wrapped_data_key
    trial.wrapped_audit_key = material.wrapped_audit_key
    trial.wrapped_row_key = material.wrapped_row_key
    trial.key_format = material.key_format
    _check_new_key_file(new_key_file, op, material)
    op.audit(
        "key.rotate",
        subject=trial.id,
        details={
            "new_key_file": str(new_key_file),
            "key_format": {"before": key_format_before, "after": material.key_format},
            "resealed": resealed,
        },
    )
    op.session.flush()
    return Rotation(
        new_key_file=str(new_key_file),
        key_format_before=key_format_before,
        key_format_after=material.key_format,
        resealed=resealed,
    )


def _check_privileges(op: Operation) -> None:
    """On PostgreSQL, refuse a role that may not rewrite what rotation rewrites.

    The application role of docs/operations.md may only insert slots: without this
    check it would fail half-way with the server's bare "permission denied".
    """
    connection = op.session.connection()
    if connection.dialect.name != "postgresql":
        return
    tables = (Slot.__tablename__, Kit.__tablename__, Trial.__tablename__)
    missing = [
        table
        for table in tables
        if not connection.exec_driver_sql(
            "SELECT has_table_privilege(%(table)s, 'UPDATE')", {"table": table}
        ).scalar_one()
    ]
    if not connection.exec_driver_sql(
        "SELECT has_database_privilege(current_database(), 'TEMPORARY')"
    ).scalar_one():
        missing.append("temporary tables")
    if missing:
        raise StoreError(
            "key rotate rewrites every sealed slot and kit, which this database role may "
            f"not ({', '.join(missing)}): run it as the database owner, as "
            "docs/operations.md says"
        )


def _check_new_key_file(path: Path, op: Operation, material: KeyMaterial) -> None:
    """The key file as written on disk opens the new key material, with the same MAC keys."""
    reopened = open_keys(read_key_file(path), op.trial.id, material)
    if (reopened.audit_key(), reopened.row_key) != (op.vault.audit_key(), op.vault.row_key):
        raise RuntimeError("the new key material does not hold the trial's MAC keys")
    if op.trial.seed_sealed is not None:
        open_seed_text(reopened, op.trial.seed_sealed)


def discard_new_key_file(store: Store, new_key_file: Path) -> None:
    """After a failed rotation, remove the new key file unless the database may need it.

    It is removed only when the database is reachable and its wrapped data key does not
    unwrap with it (the rotation did not commit). If it does unwrap (the commit went
    through although an error was reported), or the database cannot be read (a lost
    connection while committing), the file stays: it may be the only key that opens
    the database.
    """
    try:
        new_key = read_key_file(new_key_file)
    except Exception:  # unreadable or half-written: it opens nothing
        new_key_file.unlink(missing_ok=True)
        return
    try:
        with store.transaction(read_only=True) as session:
            wrapped = load_trial(session).wrapped_data_key
    except Exception:  # the outcome is unknown: keep the file
        return
    try:
        unwrap_data_key(new_key, wrapped)
    except SealedDataError:
        new_key_file.unlink(missing_ok=True)


# Where each kind of sealed value is stored ------------------------------------------------


Resealer = Callable[[Operation, Vault, Vault], int]
"""Opens every stored value of one kind with the old vault and stores it sealed by the new
one, in the operation's transaction; returns how many."""


def _reseal_slots(op: Operation, old: Vault, new: Vault) -> int:
    strata = {row.id: row.key for row in op.session.execute(select(Stratum.id, Stratum.key))}
    return _reseal_table(
        op.session.connection(),
        Slot.__tablename__,
        ("stratum_id", "sequence"),
        "allocation_sealed",
        SLOT_KIND,
        lambda row: slot_row(strata[row[0]], row[1]),
        old,
        new,
    )


def _reseal_kits(op: Operation, old: Vault, new: Vault) -> int:
    return _reseal_table(
        op.session.connection(),
        Kit.__tablename__,
        ("code",),
        "content_sealed",
        KIT_KIND,
        lambda row: kit_row(row[0]),
        old,
        new,
    )


def _reseal_seed(op: Operation, old: Vault, new: Vault) -> int:
    if op.trial.seed_sealed is None:
        return 0
    op.trial.seed_sealed = seal_seed(new, open_seed_text(old, op.trial.seed_sealed))
    return 1


RESEALERS: Mapping[str, Resealer] = {
    SLOT_KIND: _reseal_slots,
    KIT_KIND: _reseal_kits,
    SEED_KIND: _reseal_seed,
}
"""Every kind of sealed value and how rotation seals its stored values again: one entry
per kind of :data:`randomizer.sealed.SEALED_WIDTHS` (a rotation refuses to run otherwise)."""


def _reseal_table(
    connection: Connection,
    table: str,
    name_columns: tuple[str, ...],
    sealed_column: str,
    kind: str,
    row_name: Callable[[tuple[Any, ...]], str],
    old: Vault,
    new: Vault,
) -> int:
    """Seal every ``sealed_column`` of ``table`` again, :data:`RESEAL_CHUNK` rows at a time.

    Rows are read in id order after the last id seen (so rows already written are never
    read again), opened and sealed with the vaults' bulk paths, and written with the
    driver: on SQLite an ``executemany`` of ``UPDATE ... WHERE id = ?``; on PostgreSQL a
    ``COPY`` into a temporary table per chunk and one ``UPDATE ... FROM`` it at the end.
    """
    driver: Any = connection.connection.driver_connection  # psycopg's or sqlite3's
    postgres = connection.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"
    columns = ", ".join(("id", *name_columns, sealed_column))
    query = f"SELECT {columns} FROM {table} WHERE id > {mark} ORDER BY id LIMIT {mark}"
    staging = f"resealed_{table}"
    cursor = driver.cursor()
    count, last = 0, 0
    try:
        if postgres:
            cursor.execute(
                f"CREATE TEMPORARY TABLE {staging} (id integer, sealed bytea) ON COMMIT DROP"
            )
        while True:
            cursor.execute(query, (last, RESEAL_CHUNK))
            rows = cursor.fetchall()
            if not rows:
                break
            ids = [row[0] for row in rows]
            names = [row_name(tuple(row[1:-1])) for row in rows]
            values = old.open_many(kind, names, [bytes(row[-1]) for row in rows])
            resealed = new.seal_many(kind, names, values)
            if postgres:
                with cursor.copy(f"COPY {staging} (id, sealed) FROM STDIN") as copy:
                    for pair in zip(ids, resealed, strict=True):
                        copy.write_row(pair)
            else:
                cursor.executemany(
                    f"UPDATE {table} SET {sealed_column} = ? WHERE id = ?",
                    zip(resealed, ids, strict=True),
                )
            count += len(rows)
            last = ids[-1]
        if postgres:
            cursor.execute(
                f"UPDATE {table} SET {sealed_column} = s.sealed FROM {staging} s "
                f"WHERE {table}.id = s.id"
            )
            if cursor.rowcount != count:
                raise RuntimeError(
                    f"rotation sealed {count} rows of {table} but wrote back {cursor.rowcount}"
                )
            cursor.execute(f"DROP TABLE {staging}")
        cursor.execute(f"SELECT count(*) FROM {table}")
        (total,) = cursor.fetchone()
        if total != count:
            raise RuntimeError(f"rotation sealed {count} rows of {table} of {total}")
    finally:
        cursor.close()
    return count
