"""``list generate`` for a large trial: time, peak memory and where the time goes.

    python benchmarks/bench_list.py [--db URL] [--participants 200000] [--profile]
        [--profile-participants 50000]

A design with 2 factors x 2 levels (``--participants`` / 4 per stratum), 1:1, block
sizes 2/4/6, 1 dosing visit and no spare kits is created with ``randomizer init``; then
:meth:`~randomizer.backends.local.LocalBackend.generate_list` runs once, timed whole (login,
schedule, sealing every slot and kit, kit codes, inserts, audit event, commit).

While it runs, the library functions it calls are wrapped with timers (this process
only; the library is not changed), which splits the time into: the schedule
(``generate_schedule``), sealing slots (``seal_allocation``), sealing kits (the other
``Vault.seal`` calls), kit codes (``new_codes``), ORM flushes (``Session.flush``,
i.e. the INSERTs, including the one at commit) and the rest (building ORM objects, the
Python loops). Peak memory is the process's maximum resident set size (ru_maxrss) and
its growth over the size before generation. The default size keeps a run under a few
minutes; the issue's size is ``--participants 1000000``. ``--profile`` also runs
cProfile on a separate, smaller trial (``--profile-participants``) and prints the top
functions.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from common import (
    add_common_arguments,
    bench_place,
    create_trial,
    design_toml,
    machine,
    max_rss_mib,
    table,
    timed,
)
from sqlalchemy.orm import Session

from randomizer import sealed, trial
from randomizer.allocation.generator import generate_schedule
from randomizer.allocation.kits import new_codes
from randomizer.vault import Vault

FACTORS = {"type": ["PPMS", "SPMS"], "edss": ["low", "high"]}


@contextmanager
def phase_timers() -> Iterator[dict[str, float]]:
    """Wrap the functions list generation calls with timers; yield seconds per name."""
    totals: dict[str, float] = defaultdict(float)
    inside = [False]  # within trial.generate_list: flushes after it are the commit's

    def timer(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = name if inside[0] or name == "generate_list" else f"{name} (outside)"
            if name == "generate_list":
                inside[0] = True
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[key] += time.perf_counter() - start
                if name == "generate_list":
                    inside[0] = False
        return wrapper

    patches: list[tuple[Any, str, Any]] = [
        (trial, "generate_schedule", generate_schedule),
        (trial, "seal_allocation", sealed.seal_allocation),
        (trial, "new_codes", new_codes),
        (trial, "generate_list", trial.generate_list),
        (Vault, "seal", Vault.seal),
        (Session, "flush", Session.flush),
    ]
    for owner, name, original in patches:
        setattr(owner, name, timer(name, original))
    try:
        yield totals
    finally:
        for owner, name, original in patches:
            setattr(owner, name, original)


def main() -> None:
    """Create the trial, generate its list, print time, memory and the split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--participants", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true",
                        help="also profile a smaller generation under cProfile")
    parser.add_argument("--profile-participants", type=int, default=50_000)
    args = parser.parse_args()
    participants: int = args.participants
    per_stratum = participants // 4

    with bench_place(args.db, "list", args.workdir) as place:
        print(machine(place))
        admin = create_trial(place, design_toml("bench-list", per_stratum, FACTORS,
                                                criteria=False))
        admin.trial_design()  # connect and import everything before measuring
        rss_before = max_rss_mib()
        with phase_timers() as totals:
            summary, seconds = timed(admin.generate_list)
        rss_peak = max_rss_mib()
        admin.close()
        slots = sum(s.generated for s in summary.strata)
        print(f"list generate: {slots:,} slots and {summary.kits:,} kits in 4 strata on "
              f"{place.engine}")
        print(table([(place.engine, participants, seconds, slots / seconds, rss_peak,
                      rss_peak - rss_before)],
                     ("engine", "participants", "seconds", "slots/s", "peak RSS MiB",
                      "growth MiB")))

        seal_kits = totals["seal"] - totals["seal_allocation"]
        body = totals["generate_list"]
        parts = [
            ("schedule (generate_schedule)", totals["generate_schedule"]),
            ("seal slots (seal_allocation)", totals["seal_allocation"]),
            ("seal kits (Vault.seal)", seal_kits),
            ("kit codes (new_codes)", totals["new_codes"]),
            ("ORM flushes = INSERTs (Session.flush)", totals["flush"]),
        ]
        parts.append(("rest of generate_list (ORM objects, loops)",
                      body - sum(p for _, p in parts)))
        commit_flush = totals["flush (outside)"]
        parts.append(("ORM flush at commit = INSERTs (Session.flush)", commit_flush))
        parts.append(("rest outside generate_list (login, COMMIT)",
                      seconds - body - commit_flush))
        print("\nwhere the time goes (timers around library functions):")
        print(table([(name, part, 100 * part / seconds) for name, part in parts],
                    ("part", "seconds", "%")))

    if args.profile:
        with bench_place(args.db, "list_profile", args.workdir) as place:
            admin = create_trial(place, design_toml(
                "bench-list", args.profile_participants // 4, FACTORS, criteria=False))
            admin.trial_design()
            profiler = cProfile.Profile()
            profiler.enable()
            admin.generate_list()
            profiler.disable()
            admin.close()
            print(f"\ncProfile of list generate for {args.profile_participants:,} "
                  "participants, top functions by own time:")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
