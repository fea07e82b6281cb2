"""``audit verify`` events per second on a long audit trail.

    python benchmarks/bench_audit.py [--db URL] [--events 1000000] [--repeat 1]
        [--breakdown] [--profile] [--quick]

A trial database is made with ``randomizer init``; then ``--events`` events are appended
fast: the chain is computed here with :func:`randomizer.audit.canonical` and
:func:`randomizer.audit.event_mac` under the vault's audit key, exactly as
:func:`randomizer.audit.append` would, and the rows are bulk-inserted (``COPY`` on
PostgreSQL, ``executemany`` on SQLite) with the ``audit_head`` row moved to the end. The
events alternate ``auth.login`` and ``randomize`` with the details a randomization
records, as a busy trial's trail does.

Timed: :func:`randomizer.audit.verify` on the whole trail (best of ``--repeat``), and once
the whole ``audit verify`` operation through :class:`~randomizer.backends.local.LocalBackend`
(login, verify, its own audit event, commit). ``--breakdown`` adds where the time goes,
each pass timed on its own: reading the rows only (through the driver's cursor, as
``verify`` reads them); reading plus building each event's MAC input from the stored
text (``stored_body``); and the full verify, whose remainder is the MAC and the
comparisons. The table also gives the CPU time of ``audit.verify`` (this process's, and
the PostgreSQL server's), so a figure taken on a loaded machine can be read per core.
``--profile`` adds cProfile's top functions of one verify. A full-size run takes a few
minutes, mostly building the trail; ``--events 200000`` takes well under one.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from common import (
    ADMIN,
    PASSWORDS,
    BenchPlace,
    add_common_arguments,
    bench_place,
    best_of,
    copy_rows,
    create_trial,
    design_toml,
    load_average,
    machine,
    server_cpu_seconds,
    table,
    timed,
)
from sqlalchemy import update

from randomizer import audit
from randomizer.context import load_trial, open_vault
from randomizer.models import AuditHead
from randomizer.store import Store

COLUMNS = ("seq", "at", "user", "role", "action", "subject", "reason", "details", "prev_mac", "mac")
CHUNK = 50_000
TARGET = 200_000
QUICK_EVENTS = 2_000


def stored_details(details: dict[str, object]) -> str:
    """The ``details`` column as :func:`randomizer.audit.append` writes it."""
    # The faster verify proposed in docs/performance.md stores canonical JSON through
    # audit.details_text; use it when the library has it, so both versions can be timed.
    formatter = getattr(audit, "details_text", None)
    if formatter is not None:
        return str(formatter(details))
    return json.dumps(details, sort_keys=True, ensure_ascii=False)


def event_rows(
    key: bytes, first_seq: int, prev_mac: str, count: int, start: datetime
) -> Iterator[tuple[object, ...]]:
    """``count`` chained event rows after ``prev_mac``, in the table's stored form."""
    mac = prev_mac
    for offset in range(count):
        seq = first_seq + offset
        at = audit.utc_text(start + timedelta(milliseconds=seq))
        participant = offset // 2
        if offset % 2 == 0:
            user, role, action, subject = (
                f"inv{participant % 8}",
                "investigator",
                "auth.login",
                "randomize",
            )
            details: dict[str, object] = {}
        else:
            user, role, action, subject = (
                f"inv{participant % 8}",
                "investigator",
                "randomize",
                f"P-{participant:07d}",
            )
            details = {
                "randomization_number": f"R-{1 + participant % 2}-{participant:06d}",
                "site": "WAW",
                "stratum": f"type={'PS'[participant % 2]}PMS",
                "date": at[:10],
                "kit": "7K3M-Q9XA",
                "visit": 1,
            }
        body = audit.canonical(seq, at, user, role, action, subject, "", details)
        new_mac = audit.event_mac(key, mac, body)
        yield (seq, at, user, role, action, subject, "", stored_details(details), mac, new_mac)
        mac = new_mac


def fill_trail(place: BenchPlace, key: bytes, events: int) -> float:
    """Append ``events`` events after the current head; returns the seconds it took."""
    store = Store(place.db_url)
    start = datetime(2025, 1, 1, tzinfo=UTC)

    def fill() -> None:
        with store.transaction() as session:
            head_seq, head_mac = audit.head(session)
            conn = session.connection()
            rows = event_rows(key, head_seq + 1, head_mac, events, start)
            last: tuple[object, ...] | None = None
            while True:
                chunk = [row for _, row in zip(range(CHUNK), rows, strict=False)]
                if not chunk:
                    break
                copy_rows(conn, "audit_events", COLUMNS, chunk)
                last = chunk[-1]
            assert last is not None
            session.execute(
                update(AuditHead).where(AuditHead.id == 1).values(seq=last[0], mac=last[9])
            )

    try:
        return timed(fill)[1]
    finally:
        store.dispose()


def breakdown(store: Store, key: bytes) -> list[tuple[str, float]]:
    """Seconds for: reading rows; reading and rebuilding canonical bytes; full verify."""

    def read_only() -> None:
        with store.transaction() as session:
            for _row in audit.stored_rows(session.connection()):
                pass

    def read_and_canonical() -> None:
        with store.transaction() as session:
            for row in audit.stored_rows(session.connection()):
                seq, at, user, role, action, subject, reason, details, _p, _m, rows = row
                audit.stored_body(seq, at, user, role, action, subject, reason, details, rows)

    def full() -> None:
        with store.transaction() as session:
            audit.verify(session, key)

    return [
        ("read rows (driver cursor, as verify reads them)", best_of(read_only, 1)),
        ("read + MAC input from the stored text (stored_body)", best_of(read_and_canonical, 1)),
        ("full audit.verify (adds HMAC + compare)", best_of(full, 1)),
    ]


def main() -> None:
    """Build the trail, time verification, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--breakdown", action="store_true", help="time reading, canonical bytes and MACs apart"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile's top functions of one verify"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_EVENTS:,} events: checks that the benchmark works, not how fast",
    )
    args = parser.parse_args()
    events: int = QUICK_EVENTS if args.quick else args.events

    with bench_place(args.db, "audit", args.workdir) as place:
        print(machine(place))
        print(f"load average before: {load_average()}")
        admin = create_trial(place, design_toml("bench-audit", 10, {}))
        admin.close()
        store = Store(place.db_url)
        with store.transaction() as session:
            key = open_vault(load_trial(session), place.key_file).audit_key()
        fill_seconds = fill_trail(place, key, events)
        with store.transaction() as session:
            total = audit.head(session)[0]
        print(
            f"trail: {total:,} events built and inserted in {fill_seconds:.1f} s "
            f"({events / fill_seconds:,.0f}/s)"
        )

        def verify() -> None:
            with store.transaction() as session:
                report = audit.verify(session, key)
                assert report.events == audit.head(session)[0]

        seconds = float("inf")
        cpu = server = 0.0
        for _ in range(max(1, args.repeat)):
            cpu_before, server_before = time.process_time(), server_cpu_seconds(place.db_url)
            took = timed(verify)[1]
            if took < seconds:
                seconds, cpu = took, time.process_time() - cpu_before
                server_after = server_cpu_seconds(place.db_url)
                server = (
                    0.0
                    if server_before is None or server_after is None
                    else server_after - server_before
                )
        command = place.backend(ADMIN, PASSWORDS[ADMIN])
        report, command_seconds = timed(command.audit_verify)
        command.close()
        rows = [
            ("audit.verify", total, seconds, total / seconds, cpu, total / cpu, server),
            (
                "LocalBackend.audit_verify (the command)",
                report.events,
                command_seconds,
                report.events / command_seconds,
                "-",
                "-",
                "-",
            ),
        ]
        print(f"\naudit verify on {place.engine} (target >= {TARGET:,} events/s):")
        print(
            table(
                rows,
                (
                    "what",
                    "events",
                    "seconds",
                    "events/s",
                    "CPU s",
                    "events per CPU s",
                    "db server CPU s",
                ),
            )
        )
        print(
            "(CPU s: this process's; events per CPU s: what one process does with a core "
            "to itself; db server CPU s: the PostgreSQL backends', from /proc)"
        )
        print(f"load average after: {load_average()}")

        if args.breakdown:
            print("\nwhere the time goes (each pass timed on its own):")
            previous = 0.0
            shown = []
            for label, part in breakdown(store, key):
                shown.append((label, part, part - previous, 1e6 * (part - previous) / total))
                previous = part
            print(table(shown, ("pass", "seconds", "added s", "added us/event")))

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            verify()
            profiler.disable()
            print("\ncProfile of one audit.verify, top functions by own time:")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
        store.dispose()


if __name__ == "__main__":
    main()
