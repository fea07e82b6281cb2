"""How fast is the list generator? Prints numbers; asserts nothing.

    python3 benchmarks/bench_generator.py [--participants 1000000] [--repeat 5] [--quick]

For N participants in 2 factors x 2 levels (N/4 per stratum), 1:1, block sizes
2/4/6, it times:

- the vectorised generator (``generate_schedule``), best of ``--repeat`` runs;
- the pure-Python reference of the tests (``tests/allocation/reference.py``), best of
  up to 3 runs;
- the floor: producing the SHAKE-256 bytes the list consumes, and one numpy pass
  over them (``np.frombuffer(...).max()``), best of ``--repeat`` runs;
- the PyPI package ``randomization`` (``random_block(N, 2, [2, 4, 6])``), a
  non-cryptographic generator built on the ``random`` module, if it is installed
  (``pip install randomization``; used here only).

and each one's peak memory, traced in a separate run (tracemalloc), so tracing
does not slow the timed runs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    load_average,
    load_randomization,
    max_rss_mib,
    randomization_run,
)

from randomizer.allocation.generator import Schedule, generate_schedule  # noqa: E402
from randomizer.allocation.stream import stream_input  # noqa: E402
from randomizer.design import TrialDesign  # noqa: E402
from tests.allocation import reference  # noqa: E402
from tests.support.designs import make_design  # noqa: E402

SEED = bytes.fromhex("7d1e6a0c3b9f4e2d8a5c1b7e0f3d6a9c2e5b8d1f4a7c0e3b6d9f2a5c8e1b4d70")
SIZES = [2, 4, 6]
FACTORS = {"type": ["PPMS", "SPMS"], "edss": ["low", "high"]}
TARGET_SECONDS = 0.2


def best_time(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def peak_mib(run: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def floor_run(schedule: Schedule) -> Callable[[], object]:
    """Produce exactly the stream bytes the list consumed, and pass over them once."""
    jobs: list[tuple[bytes, int]] = []
    for stratum in schedule.strata:
        label = f"stratum:{stratum.stratum}"
        # One sizes word per block and size - 1 shuffle words per block (a rejected
        # word would add one; none occurs at these sizes for this seed).
        jobs.append((stream_input(SEED, f"{label}/sizes"), stratum.blocks))
        jobs.append((stream_input(SEED, f"{label}/shuffle"), len(stratum) - stratum.blocks))

    def run() -> int:
        top = 0
        for message, words in jobs:
            raw = hashlib.shake_256(message).digest(8 * words)
            top = max(top, int(np.frombuffer(raw, dtype="<u8").max()))
        return top

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20,000 participants, one run each: checks that the benchmark works, not how fast",
    )
    args = parser.parse_args()
    participants: int = 20_000 if args.quick else args.participants
    repeat: int = 1 if args.quick else args.repeat
    per_stratum = participants // 4
    design: TrialDesign = make_design(["exosome", "saline"], [1, 1], SIZES, per_stratum, FACTORS)

    print(
        f"{participants:,} participants: 2 factors x 2 levels ({per_stratum:,} per stratum), "
        f"1:1, block sizes {SIZES}; Python {sys.version.split()[0]}, numpy {np.__version__}"
    )
    print(f"load average before: {load_average()}")

    def vectorised() -> Schedule:
        return generate_schedule(design, SEED)

    schedule = vectorised()  # warm-up, and the list the others are checked against
    rows: list[tuple[str, float, float]] = []  # name, seconds, peak MiB
    t_vec = best_time(vectorised, repeat)
    rows.append(("vectorised generate_schedule", t_vec, peak_mib(vectorised)))

    floor = floor_run(schedule)
    t_floor = best_time(floor, repeat)
    rows.append(("floor: SHAKE-256 bytes + one numpy pass", t_floor, peak_mib(floor)))

    t_ref = best_time(lambda: reference.generate(design, SEED), min(repeat, 3))
    rows.append(
        (
            "pure-Python reference",
            t_ref,
            peak_mib(lambda: reference.generate(design, SEED, per_stratum // 10)) * 10,
        )
    )

    module = load_randomization()
    t_pkg: float | None = None
    if module is None:
        print(
            "note: the PyPI package `randomization` is not installed "
            "(pip install randomization); skipping it"
        )
    else:
        run = randomization_run(module, participants, SIZES)
        t_pkg = best_time(run, max(1, repeat // 2))
        rows.append(("PyPI randomization.random_block", t_pkg, peak_mib(run)))

    t_digest = best_time(schedule.digest, max(1, repeat // 2))
    rows.append(("(list digest of the vectorised list)", t_digest, peak_mib(schedule.digest)))

    print()
    print(f"{'':42s} {'seconds':>9s} {'peak MiB':>9s}")
    for name, seconds, mib in rows:
        print(f"{name:42s} {seconds:9.4f} {mib:9.1f}")
    print("(reference peak memory: traced at a tenth of the length, times 10)")
    print(f"process max RSS: {max_rss_mib():.0f} MiB")

    same = (
        reference.digest(reference.generate(design, SEED, min(per_stratum, 20_000)))
        == generate_schedule(design, SEED, min(per_stratum, 20_000)).digest()
    )
    print()
    print(f"vectorised / floor .................. {t_vec / t_floor:6.2f}x   (target <= 3x)")
    print(f"reference / vectorised .............. {t_ref / t_vec:6.1f}x   (target >= 50x)")
    if t_pkg is not None:
        print(f"randomization / vectorised .......... {t_pkg / t_vec:6.1f}x   (target > 1x)")
    print(f"vectorised time ..................... {t_vec:.4f} s (target < {TARGET_SECONDS} s)")
    print(
        f"vectorised and reference agree on a {4 * min(per_stratum, 20_000):,}-slot list: "
        f"{'yes' if same else 'NO'}"
    )
    met = (
        t_vec < TARGET_SECONDS
        and t_vec <= 3 * t_floor
        and t_ref >= 50 * t_vec
        and (t_pkg is None or t_pkg > t_vec)
        and same
    )
    print(f"all targets met: {'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
