"""``unblind all`` (the full unblinding export) for 100,000 participants.

    python benchmarks/bench_export.py [--db URL] [--participants 100000] [--repeat 3]
        [--profile]

A one-stratum design with ``--participants`` slots (1 dosing visit, no spares) is
created with ``randomizer init`` and ``list generate``. Then every slot is taken at once
with bulk SQL that writes what ``randomize`` writes: a ``participants`` row per slot (in
list order, with its randomization number), the slot's visit-1 kit marked dispensed to
it, and the stratum's ``next_sequence`` moved past the end. (The audit events of those
randomizations are left out: the export does not read the trail.) The admin locks the
database; then the statistician's :meth:`~randomizer.backends.local.LocalBackend.unblind_all`
is timed, best of ``--repeat``, whole (login, reading, opening every sealed slot, CSV,
audit event, commit). ``--profile`` adds cProfile's top functions of one export.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from datetime import UTC, datetime

from common import (
    PASSWORDS,
    BenchPlace,
    add_common_arguments,
    bench_place,
    best_of,
    create_trial,
    design_toml,
    machine,
    max_rss_mib,
    table,
    timed,
)
from sqlalchemy import insert, select, update

from randomizer.access import Role
from randomizer.allocation.service import randomization_number
from randomizer.models import Kit, Participant, Slot, Stratum
from randomizer.store import Store

TARGET_SECONDS = 2.0
STATISTICIAN = "statistician"
BATCH = 20_000


def take_every_slot(place: BenchPlace, participants: int) -> float:
    """Randomize ``participants`` participants by bulk SQL; returns the seconds it took."""
    store = Store(place.db_url)
    now = datetime.now(UTC)

    def fill() -> None:
        with store.transaction() as session:
            stratum = session.scalars(select(Stratum)).one()
            slots = session.execute(select(Slot.id, Slot.sequence)
                                    .where(Slot.stratum_id == stratum.id)
                                    .order_by(Slot.sequence).limit(participants)).all()
            assert len(slots) == participants, "the list is shorter than --participants"
            rows = [{"code": f"P-{sequence:07d}", "site": "WAW", "stratum_id": stratum.id,
                     "slot_id": slot_id,
                     "randomization_number": randomization_number(1, 1, sequence),
                     "randomized_on": now.date(), "randomized_at": now,
                     "randomized_by": "inv0", "answers": {"age": "40", "consent": "yes"}}
                    for slot_id, sequence in slots]
            for start in range(0, len(rows), BATCH):
                session.execute(insert(Participant), rows[start:start + BATCH])
            taker = select(Participant.id).where(Participant.slot_id == Kit.slot_id) \
                .scalar_subquery()
            session.execute(update(Kit).where(Kit.visit == 1, Kit.spare.is_(False),
                                              Kit.slot_id.in_(select(Participant.slot_id)))
                            .values(status="dispensed", participant_id=taker,
                                    dispensed_at=now, visit_date=now.date()),
                            execution_options={"synchronize_session": False})
            stratum.next_sequence = participants + 1
    try:
        return timed(fill)[1]
    finally:
        store.dispose()


def main() -> None:
    """Build the randomized, locked trial; time the export; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile's top functions of one export")
    args = parser.parse_args()
    participants: int = args.participants

    with bench_place(args.db, "export", args.workdir) as place:
        print(machine(place))
        admin = create_trial(place, design_toml("bench-export", participants, {}),
                             [(STATISTICIAN, Role.STATISTICIAN, PASSWORDS[STATISTICIAN])])
        summary, generate_seconds = timed(admin.generate_list)
        print(f"list: {summary.kits:,} slots and kits generated in {generate_seconds:.1f} s")
        fill_seconds = take_every_slot(place, participants)
        print(f"{participants:,} participants randomized by bulk SQL in {fill_seconds:.1f} s")
        admin.lock("benchmark: full unblinding export")
        admin.close()

        statistician = place.backend(STATISTICIAN, PASSWORDS[STATISTICIAN])
        export, first = timed(statistician.unblind_all)
        assert export.participants == participants
        lines = export.csv.count(b"\n") - 1
        assert lines == participants, (lines, participants)
        rss_after_first = max_rss_mib()
        best = min(first, best_of(statistician.unblind_all, args.repeat - 1)) \
            if args.repeat > 1 else first
        print(f"\nunblind all on {place.engine} (target < {TARGET_SECONDS} s):")
        print(table([(place.engine, participants, first, best, participants / best,
                      len(export.csv) / 2**20, rss_after_first)],
                    ("engine", "participants", "first s", "best s", "rows/s", "CSV MiB",
                     "max RSS MiB")))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            statistician.unblind_all()
            profiler.disable()
            print("\ncProfile of one export, top functions by own time:")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
            print("by cumulative time:")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        statistician.close()


if __name__ == "__main__":
    main()
