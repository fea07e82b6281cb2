"""``unblind all`` (the full unblinding export) for 100,000 participants.

    python benchmarks/bench_export.py [--db URL] [--participants 100000] [--repeat 3]
        [--profile] [--quick]

A one-stratum design with ``--participants`` slots (1 dosing visit, no spares) is
created with ``randomizer init`` and ``list generate``. Then every slot is taken at once
with bulk SQL that writes what ``randomize`` writes: a ``participants`` row per slot (in
list order, with its randomization number), the slot's visit-1 kit marked dispensed to
it, and the stratum's ``next_sequence`` moved past the end. (The audit events of those
randomizations are left out: the export does not read the trail.) The admin locks the
database; then the statistician's :meth:`~randomizer.backends.local.LocalBackend.unblind_all`
is timed, whole (login, reading, opening every sealed slot, CSV, audit event, commit),
``--repeat`` times, each in a fresh child process that has imported everything and
opened the database first (``trial_design``), the files written to disk as
``unblind all --out`` writes them (``unblind_all(out=...)``): its wall and CPU time, and its peak
resident set size (``VmHWM``, see ``common.max_rss_mib``), so that building the trial
does not count. Every
run's files must hash the same. ``--profile`` adds cProfile's top functions of one export.

Target (issue 13, item 7): at most 1.0 s on SQLite with a peak RSS under 200 MiB.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    ADMIN,
    PASSWORDS,
    BenchPlace,
    add_common_arguments,
    bench_place,
    child_figures,
    create_trial,
    design_toml,
    load_average,
    machine,
    max_rss_mib,
    print_profile,
    table,
    timed,
)
from sqlalchemy import insert, select, update

from randomizer.access import Role
from randomizer.allocation.service import randomization_number
from randomizer.context import plain_vault
from randomizer.models import Kit, Participant, Slot, Stratum
from randomizer.rows import seal_unsealed
from randomizer.signatures import Signature, meaning_of
from randomizer.store import Store
from randomizer.vault import read_key_file

TARGET_SECONDS = 1.0
TARGET_RSS_MIB = 200.0
STATISTICIAN = "statistician"
BATCH = 20_000
QUICK_PARTICIPANTS = 2_000


def take_every_slot(place: BenchPlace, participants: int) -> float:
    """Randomize ``participants`` participants by bulk SQL; returns the seconds it took."""
    store = Store(place.db_url)
    now = datetime.now(UTC)

    def fill() -> None:
        with store.transaction() as session:
            stratum = session.scalars(select(Stratum)).one()
            slots = session.execute(
                select(Slot.id, Slot.sequence)
                .where(Slot.stratum_id == stratum.id)
                .order_by(Slot.sequence)
                .limit(participants)
            ).all()
            assert len(slots) == participants, "the list is shorter than --participants"
            rows = [
                {
                    "code": f"P-{sequence:07d}",
                    "site": "WAW",
                    "stratum_id": stratum.id,
                    "slot_id": slot_id,
                    "randomization_number": randomization_number(1, 1, sequence),
                    "randomized_on": now.date(),
                    "randomized_at": now,
                    "randomized_by": "inv0",
                    "answers": {"age": "40", "consent": "yes"},
                }
                for slot_id, sequence in slots
            ]
            for start in range(0, len(rows), BATCH):
                session.execute(insert(Participant), rows[start : start + BATCH])
            taker = (
                select(Participant.id).where(Participant.slot_id == Kit.slot_id).scalar_subquery()
            )
            session.execute(
                update(Kit)
                .where(
                    Kit.visit == 1,
                    Kit.spare.is_(False),
                    Kit.slot_id.in_(select(Participant.slot_id)),
                )
                .values(
                    status="dispensed",
                    participant_id=taker,
                    dispensed_at=now,
                    visit_date=now.date(),
                ),
                execution_options={"synchronize_session": False},
            )
            stratum.next_sequence = participants + 1
            session.flush()
            # the rows written past the tool get their MACs, as the tool would have given them
            session.execute(update(Stratum).values(row_mac=None))
            session.execute(update(Kit).where(Kit.visit == 1).values(row_mac=None))
            seal_unsealed(session, plain_vault(session, read_key_file(place.key_file)))

    try:
        return timed(fill)[1]
    finally:
        store.dispose()


def export_in_child(db_url: str, key_file: str) -> dict[str, Any]:
    """One export to disk (as ``unblind all --out`` writes it) in this (child) process:
    its time, CPU time, peak RSS and file hashes; the files are removed afterwards."""
    statistician = BenchPlace(db_url, Path(key_file), Path(key_file).parent, "").backend(
        STATISTICIAN, PASSWORDS[STATISTICIAN]
    )
    statistician.trial_design()  # import, connect and read the design first
    out = Path(tempfile.mkdtemp(prefix="bench_export_out_")) / "unblinding.csv"
    try:
        rss_before = max_rss_mib()
        cpu = time.process_time()
        signature = Signature(PASSWORDS[STATISTICIAN], meaning_of("unblind.all"))
        export, seconds = timed(lambda: statistician.unblind_all(signature=signature, out=out))
        cpu = time.process_time() - cpu
        rss_peak = max_rss_mib()
        statistician.close()
        lines = 0
        with out.open("rb") as written:
            while chunk := written.read(1 << 20):
                lines += chunk.count(b"\n")
        return {
            "seconds": seconds,
            "cpu": cpu,
            "rss_before": rss_before,
            "rss_peak": rss_peak,
            "participants": export.participants,
            "sha256": export.sha256,
            "files_sha256": export.file_sha256,
            "lines": lines - 1,
            "mib": out.stat().st_size / 2**20,
        }
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def run_child(place: BenchPlace) -> dict[str, Any]:
    """:func:`export_in_child` in a fresh process."""
    command = [sys.executable, __file__, "--child", place.db_url, str(place.key_file)]
    return child_figures(command, "the export")


def main() -> None:
    """Build the randomized, locked trial; time the export; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile's top functions of one export"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_PARTICIPANTS:,} participants, one export: checks that "
        "the benchmark works, not how fast",
    )
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(export_in_child(*args.child)))
        return
    participants: int = QUICK_PARTICIPANTS if args.quick else args.participants
    repeat: int = 1 if args.quick else max(1, args.repeat)

    with bench_place(args.db, "export", args.workdir) as place:
        print(machine(place))
        admin = create_trial(
            place,
            design_toml("bench-export", participants, {}),
            [(STATISTICIAN, Role.STATISTICIAN, PASSWORDS[STATISTICIAN])],
        )
        summary, generate_seconds = timed(admin.generate_list)
        print(f"list: {summary.kits:,} slots and kits generated in {generate_seconds:.1f} s")
        fill_seconds = take_every_slot(place, participants)
        print(f"{participants:,} participants randomized by bulk SQL in {fill_seconds:.1f} s")
        admin.lock(
            "benchmark: full unblinding export",
            signature=Signature(PASSWORDS[ADMIN], meaning_of("lock")),
        )
        admin.close()

        print(f"load average before: {load_average()}")
        runs = [run_child(place) for _ in range(repeat)]
        print(f"load average after: {load_average()}")
        assert all(r["participants"] == r["lines"] == participants for r in runs), runs
        assert len({json.dumps([r["sha256"], r["files_sha256"]]) for r in runs}) == 1, (
            "the exports differ"
        )
        best = min(runs, key=lambda r: r["seconds"])
        peak = max(r["rss_peak"] for r in runs)
        met = best["seconds"] <= TARGET_SECONDS and peak < TARGET_RSS_MIB
        print(
            f"\nunblind all on {place.engine}, each run in a fresh process (target <= "
            f"{TARGET_SECONDS} s, peak RSS < {TARGET_RSS_MIB:.0f} MiB):"
        )
        print(
            table(
                [
                    (
                        place.engine,
                        participants,
                        runs[0]["seconds"],
                        best["seconds"],
                        min(r["cpu"] for r in runs),
                        participants / best["seconds"],
                        best["mib"],
                        best["rss_before"],
                        peak,
                        "yes" if met else "NO",
                    )
                ],
                (
                    "engine",
                    "participants",
                    "first s",
                    "best s",
                    "best CPU s",
                    "rows/s",
                    "CSV MiB",
                    "RSS before MiB",
                    "peak RSS MiB",
                    "met",
                ),
            )
        )
        print(f"CSV SHA-256 (every run): {best['sha256']}")
        for name, sha in sorted(best["files_sha256"].items()):
            print(f"{name} SHA-256 (every run): {sha}")
        if args.profile:
            statistician = place.backend(STATISTICIAN, PASSWORDS[STATISTICIAN])
            statistician.trial_design()
            out = place.directory / "profiled" / "unblinding.csv"
            out.parent.mkdir()
            profiler = cProfile.Profile()
            profiler.enable()
            statistician.unblind_all(
                signature=Signature(PASSWORDS[STATISTICIAN], meaning_of("unblind.all")), out=out
            )
            profiler.disable()
            print()
            print_profile(profiler, "one export")
            statistician.close()


if __name__ == "__main__":
    main()
