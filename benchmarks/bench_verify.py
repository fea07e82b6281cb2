"""``randomizer verify`` for a large trial: rows per second of the row MAC check, and whole.

    python benchmarks/bench_verify.py [--db URL] [--participants 100000 ...] [--quick]
        [--profile]

For each ``--participants`` (default 100,000) a trial of the shipped design planned for
that many is created and its list generated (about 5.4 rows per participant: slots,
four dosing kits each and the spares), then, in one transaction each:

- ``rows``: :func:`randomizer.rows.check_tables`, every covered row's MAC checked as the
  rows stream in batches, and the rows compared with the trail's records;
- ``verify``: :meth:`LocalBackend.verify_database` whole (login, chain, rows, the list
  regenerated from its seed and compared, the ``verify`` event).

``--profile`` adds cProfile's top functions of one whole verify (of the last size).

Target (issue 10 item 1 with issue 13): the row check at 200,000 rows/s or more.
"""

from __future__ import annotations

import argparse
import cProfile
import time

from common import (
    ADMIN,
    PASSWORDS,
    add_common_arguments,
    bench_place,
    create_trial,
    load_average,
    machine,
    print_profile,
    table,
    timed,
)

from randomizer import rows
from randomizer.context import load_trial, vault_for
from randomizer.design import design_text
from randomizer.store import Store
from randomizer.vault import read_key_file

TARGET_ROWS_PER_SECOND = 200_000
QUICK_PARTICIPANTS = [2_000]


def shipped_design(participants: int) -> str:
    """exosome-ms as shipped, planned for ``participants``."""
    text = design_text("exosome-ms")
    planned = "planned_participants = 20"
    assert planned in text, "the shipped design changed: update this benchmark"
    return text.replace(planned, f"planned_participants = {participants}")


def measure(db: str, workdir: str | None, participants: int, profile: bool) -> list[object]:
    """One trial of ``participants``: its row count, row check and whole verify times
    (``profile``: then cProfile's top functions of one more whole verify)."""
    with bench_place(db, "verify", workdir) as place:
        admin = create_trial(place, shipped_design(participants))
        admin.generate_list()
        admin.close()
        store = Store(place.db_url)
        try:
            with store.transaction(read_only=True) as session:
                vault = vault_for(load_trial(session), read_key_file(place.key_file))
                start = time.perf_counter()
                tables, problems = rows.check_tables(session, vault)
                row_seconds = time.perf_counter() - start
        finally:
            store.dispose()
        assert problems == [], problems
        count = sum(t.rows for t in tables)
        checker = place.backend(ADMIN, PASSWORDS[ADMIN])
        report, verify_seconds = timed(checker.verify_database)
        assert report.ok, report.problems
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            checker.verify_database()
            profiler.disable()
            print_profile(profiler, "one whole verify")
        checker.close()
        return [
            place.engine,
            participants,
            count,
            row_seconds,
            round(count / row_seconds),
            verify_seconds,
            round(count / verify_seconds),
        ]


def main() -> None:
    """Measure each size and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--participants", type=int, nargs="+", default=[100_000])
    parser.add_argument("--quick", action="store_true", help="one small trial (CI)")
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile's top functions of one verify"
    )
    args = parser.parse_args()
    sizes = QUICK_PARTICIPANTS if args.quick else args.participants
    print(f"load average before: {load_average()}")
    results = [measure(args.db, args.workdir, n, args.profile and n == sizes[-1]) for n in sizes]
    print(f"load average after: {load_average()}")
    print(machine())
    print(
        table(
            results,
            [
                "engine",
                "participants",
                "rows",
                "row check s",
                "rows/s",
                "verify s",
                "rows/s whole",
            ],
        )
    )
    print(f"target: row check at {TARGET_ROWS_PER_SECOND:,} rows/s or more")


if __name__ == "__main__":
    main()
