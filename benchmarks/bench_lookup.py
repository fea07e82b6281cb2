"""One pharmacist's kit lookup on a large trial: the whole pharmacy list (before) or one kit.

    python benchmarks/bench_lookup.py [--db URL] [--participants 100000] [--events N]
        [--repeat 20] [--quick]

A trial of the shipped design planned for ``--participants`` (default 100,000) is created
and its list generated and approved (about 5.4 kits a participant: four dosing kits each
and the spares). Two participants are randomized, the first kit replaced, and the trail
is made as long as a busy trial's: ``--events`` events (default five a participant,
appended fast as ``bench_audit.py`` appends them), since who requested a kit comes from
the trail (its events found through the index on their subject, schema 0009).

Timed, through :class:`~randomizer.backends.local.LocalBackend` as a logged-in pharmacist
(the page's own backend), for three kits (a requested one, the replacement spare, and an
unissued one):

- **before**: ``pharmacy_list()`` and the kit picked from it, as the lookup page did;
- **after**: ``lookup_kit(code)``, one kit by its code; and the pharmacist's queue,
  ``pharmacy_queue()`` against the same whole list filtered as the queue page did.

Each is one audited operation (its own transaction and ``pharmacy.list`` event). The
before figure is one run (it takes seconds); the after figure is the median and the
slowest of ``--repeat`` runs. The machine's load average is printed before and after.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

from bench_audit import fill_trail
from bench_verify import shipped_design
from common import (
    add_common_arguments,
    approve_list,
    bench_place,
    create_trial,
    load_average,
    machine,
    table,
    timed,
)

from randomizer.access import Role
from randomizer.backends.local import LocalBackend
from randomizer.context import load_trial, open_vault
from randomizer.results import PharmacyKit
from randomizer.signatures import Signature, meaning_of
from randomizer.store import Store
from tests.support.exosome import ELIGIBLE

PHARMACIST = ("petra", "pw-pharmacist-123456")
INVESTIGATOR = ("ivan", "pw-investigator-123456")
QUICK_PARTICIPANTS = 2_000
EVENTS_PER_PARTICIPANT = 5


def listed(pharmacist: LocalBackend, code: str) -> list[PharmacyKit]:
    """The kit ``code`` as the lookup page found it before: in the whole pharmacy list."""
    return [k for k in pharmacist.pharmacy_list() if k.kit == code]


def main() -> None:
    """Build the trial, time the lookup both ways, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help=f"events added to the trail (default {EVENTS_PER_PARTICIPANT} a participant)",
    )
    parser.add_argument("--repeat", type=int, default=20, help="runs of each lookup (after)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_PARTICIPANTS:,} participants: checks that it works, not how fast",
    )
    args = parser.parse_args()
    participants = QUICK_PARTICIPANTS if args.quick else args.participants
    events = args.events if args.events is not None else EVENTS_PER_PARTICIPANT * participants
    repeat = 3 if args.quick else max(1, args.repeat)

    with bench_place(args.db, "lookup", args.workdir) as place:
        print(machine(place))
        print(f"load average before: {load_average()}")
        users = [
            (PHARMACIST[0], Role.PHARMACIST, PHARMACIST[1]),
            (INVESTIGATOR[0], Role.INVESTIGATOR, INVESTIGATOR[1]),
        ]
        admin = create_trial(place, shipped_design(participants), users)
        (_, generate_seconds) = timed(admin.generate_list)
        admin.close()
        approve_list(place)
        ivan = place.backend(*INVESTIGATOR)
        signed = Signature(INVESTIGATOR[1], meaning_of("randomize"))
        first = ivan.randomize("P-001", "WAW", {}, dict(ELIGIBLE), None, signature=signed)
        ivan.randomize("P-002", "WAW", {}, dict(ELIGIBLE), None, signature=signed)
        spare = ivan.replace_kit(first.kit, "bag damaged").kit
        ivan.close()
        store = Store(place.db_url)
        try:
            with store.transaction() as session:
                key = open_vault(load_trial(session), place.key_file).audit_key()
        finally:
            store.dispose()
        fill_seconds = fill_trail(place, key, events)

        petra = place.backend(*PHARMACIST)
        kits = petra.pharmacy_list()  # logs in (once); the trail now ends with this
        requested = next(k.kit for k in kits if k.participant == "P-002")
        unissued = next(k.kit for k in kits if k.status == "available" and not k.spare)
        rows = []
        for label, code in (
            ("requested kit", requested),
            ("replacement spare", spare),
            ("unissued kit", unissued),
        ):
            whole, before = timed(partial(listed, petra, code))
            one = petra.lookup_kit(code)  # warm
            assert whole == [one], (whole, one)
            after = [timed(partial(petra.lookup_kit, code))[1] for _ in range(repeat)]
            rows.append(
                (
                    label,
                    code,
                    1000 * before,
                    1000 * statistics.median(after),
                    1000 * max(after),
                    before / statistics.median(after),
                )
            )
        queue = petra.pharmacy_queue()  # warm
        assert [k.kit for k in queue] == [
            k.kit
            for k in sorted(kits, key=lambda k: (k.requested_at, k.kit))
            if k.status == "requested"
        ]
        queued = [timed(petra.pharmacy_queue)[1] for _ in range(repeat)]
        rows.append(
            (
                f"the queue ({len(queue)} kits)",
                "-",
                1000 * before,
                1000 * statistics.median(queued),
                1000 * max(queued),
                before / statistics.median(queued),
            )
        )
        petra.close()
        print(
            f"\n{participants:,} participants, {len(kits):,} kits (list generated in "
            f"{generate_seconds:.1f} s), trail +{events:,} events ({fill_seconds:.1f} s), "
            f"{place.engine}:"
        )
        print(
            table(
                rows,
                (
                    "kit",
                    "code",
                    "before ms (pharmacy_list)",
                    f"after ms (lookup_kit or pharmacy_queue, median of {repeat})",
                    "after ms, slowest",
                    "times faster",
                ),
            )
        )
        print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
