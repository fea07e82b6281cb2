"""The test database and its contents, seen as someone with database access but no key.

Which database the tests use (``RANDOMIZER_TEST_DB``), a fresh one for a
fixture, row-for-row dumps to prove that nothing changed, SQL run behind the
service's back, and the audit trail read straight from its table.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SAWarning

from randomizer import audit
from randomizer.models import AuditRecord

TEST_DB_ENV = "RANDOMIZER_TEST_DB"

Dump = dict[str, list[tuple[Any, ...]]]
"""Every row of every table, by table name, rows sorted."""

AUDIT_TABLES = ("audit_events", "audit_head")


def postgres_url() -> str | None:
    """The PostgreSQL maintenance URL the tests run against, if any."""
    return os.environ.get(TEST_DB_ENV) or None


@contextmanager
def scratch_db_url(directory: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in ``directory``, or a new schema on PostgreSQL.

    On PostgreSQL the database gets a schema of its own, named in the URL's
    ``search_path`` (creating a database costs half a second; a schema, a
    millisecond), and its connections carry the schema's name as
    ``application_name``, so that the teardown can end any a failed test left
    open before it drops the schema.
    """
    server = postgres_url()
    if server is None:
        yield f"sqlite:///{directory / 'trial.db'}"
        return
    schema = f"randomizer_test_{uuid.uuid4().hex[:16]}"
    maintenance = create_engine(make_url(server), isolation_level="AUTOCOMMIT")
    try:
        with maintenance.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(server).update_query_dict(
            {"options": f"-csearch_path={schema}", "application_name": schema}
        )
        yield url.render_as_string(hide_password=False)
    finally:
        with maintenance.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE application_name = '{schema}'"
            )
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        maintenance.dispose()


@contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database ``<prefix>_<hex>`` on ``server_url``'s server.

    Yields its URL; the database is dropped afterwards (``WITH (FORCE)``, ending
    any connection left open).
    """
    server = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def fold_wal(db_path: Path) -> None:
    """Fold a SQLite database's write-ahead log into its main file, so one file is all of it."""
    connection = sqlite3.connect(db_path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    assert not Path(f"{db_path}-wal").exists()


class Snapshots:
    """Row-for-row dumps of one database through one long-lived engine.

    The schema is read once, when the object is made: for many dumps of one
    database (a fuzz test takes one per example). :func:`dump_database` reads
    it afresh for a single dump.
    """

    def __init__(self, db_url: str) -> None:
        self.engine: Engine = create_engine(db_url)
        self.metadata = MetaData()
        with warnings.catch_warnings():
            # the upper(code) index: a dump reads rows, never indexes
            warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
            self.metadata.reflect(self.engine)
        self.columns = {
            name: [c.name for c in table.columns] for name, table in self.metadata.tables.items()
        }
        """Each table's column names, in the order of a dump's row tuples."""

    def dump(self) -> Dump:
        """Every row of every table, sorted: compare before and after to prove nothing changed."""
        with self.engine.connect() as conn:
            return {
                name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
                for name, table in self.metadata.tables.items()
            }

    def dispose(self) -> None:
        """Close the engine's connections."""
        self.engine.dispose()


def dump_database(db_url: str) -> Dump:
    """Every row of every table, sorted: compare before and after to prove nothing changed."""
    snapshots = Snapshots(db_url)
    try:
        return snapshots.dump()
    finally:
        snapshots.dispose()


def without_audit(dump: Mapping[str, Any]) -> dict[str, Any]:
    """A database dump less the audit trail (refusals are recorded there)."""
    return {name: rows for name, rows in dump.items() if name not in AUDIT_TABLES}


def execute(db_url: str, *statements: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run SQL statements in one transaction, as someone with database access but no key.

    Returns the rows of the last statement (empty if it returns none).
    """
    engine = create_engine(db_url)
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
    """The audit trail read straight from its table, in sequence order, details and the
    record of rows written (None if none) parsed."""
    rows = execute(
        db_url,
        'SELECT seq, at, "user", role, action, subject, reason, details, '
        "prev_mac, mac, rows FROM audit_events ORDER BY seq",
    )
    keys = (
        "seq",
        "at",
        "user",
        "role",
        "action",
        "subject",
        "reason",
        "details",
        "prev_mac",
        "mac",
        "rows",
    )
    events = [dict(zip(keys, row, strict=True)) for row in rows]
    for event in events:
        event["details"] = json.loads(event["details"])
        event["rows"] = None if event["rows"] is None else json.loads(event["rows"])
    return events


def new_events(
    before: Iterable[Mapping[str, Any]], after: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Audit events in ``after`` beyond the last sequence number of ``before``."""
    last = max((event["seq"] for event in before), default=0)
    return [event for event in after if event["seq"] > last]


def event_body(event: dict[str, Any]) -> bytes:
    """The canonical bytes an audit event's MAC covers, from a row of :func:`audit_rows`."""
    return audit.canonical(
        event["seq"],
        event["at"],
        event["user"],
        event["role"],
        event["action"],
        event["subject"],
        event["reason"],
        event["details"],
        event.get("rows"),
    )


def vector_rows(events: Iterable[Mapping[str, Any]]) -> list[AuditRecord]:
    """Frozen vector events as the rows a format-1 release stored (details as JSON with
    sorted keys, default separators and non-ASCII kept), for a trail built from vectors."""
    return [
        AuditRecord(
            seq=e["seq"],
            at=e["at"],
            user=e["user"],
            role=e["role"],
            action=e["action"],
            subject=e["subject"],
            reason=e["reason"],
            details=json.dumps(e["details"], sort_keys=True, ensure_ascii=False),
            prev_mac=e["prev_mac"],
            mac=e["mac"],
        )
        for e in events
    ]
