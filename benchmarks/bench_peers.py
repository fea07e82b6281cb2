"""Our list generator beside PyPI ``randomization``, in the same process. Prints numbers.

    python benchmarks/bench_peers.py [--participants 1000000] [--repeat 5] [--quick]

Both make a 1:1 two-arm permuted-block list of ``--participants`` participants with
block sizes {2, 4, 6} drawn at random per block:

- ours: :func:`randomizer.allocation.generator.generate_schedule` for one stratum of
  that length (SHAKE-256 from a 256-bit seed: cryptographic, and the same seed gives
  the same list on any machine);
- theirs: ``randomization.random_block(N, 2, [2, 4, 6], seed=...)``, built on the
  ``random`` module (a Mersenne Twister; it reseeds the global ``random`` state, which
  is saved and put back around each call here).

Best of ``--repeat`` wall times each, interleaved; the ratio is theirs over ours. The
package comes with the ``bench`` extra (``pip install -e '.[bench]'``); without it the
benchmark says so and prints our time alone. ``--quick``: 20,000 participants, one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from common import load_average, load_randomization, machine, randomization_run, table

from randomizer.allocation.generator import generate_schedule
from tests.support.designs import make_design

SEED = bytes.fromhex("7d1e6a0c3b9f4e2d8a5c1b7e0f3d6a9c2e5b8d1f4a7c0e3b6d9f2a5c8e1b4d70")
SIZES = [2, 4, 6]


def main() -> None:
    """Time both generators, interleaved, and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20,000 participants, one run")
    args = parser.parse_args()
    participants: int = 20_000 if args.quick else args.participants
    repeat: int = 1 if args.quick else args.repeat
    design = make_design(["active", "placebo"], [1, 1], SIZES, participants)
    module = load_randomization()

    print(machine())
    print(f"load average before: {load_average()}")

    def ours() -> Any:
        return generate_schedule(design, SEED)

    runs: dict[str, Callable[[], Any]] = {"randomizer generate_schedule": ours}
    if module is None:
        print(
            "note: PyPI `randomization` is not installed (pip install -e '.[bench]'); "
            "our time alone"
        )
    else:
        runs["PyPI randomization.random_block"] = randomization_run(module, participants, SIZES)
    # warm-up, and how many assignments each made
    lengths = {
        name: len(run()) for name, run in runs.items() if name != "randomizer generate_schedule"
    }
    lengths["randomizer generate_schedule"] = sum(len(s) for s in ours().strata)
    best = {name: float("inf") for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"load average after: {load_average()}")

    print(
        f"\n{participants:,} participants, 1:1, block sizes {SIZES}, best of {repeat} "
        f"(Python {sys.version.split()[0]}):"
    )
    print(
        table(
            [(name, lengths[name], seconds) for name, seconds in best.items()],
            ("generator", "assignments", "seconds"),
        )
    )
    if module is not None:
        ratio = best["PyPI randomization.random_block"] / best["randomizer generate_schedule"]
        print(
            f"\nrandomization / randomizer: {ratio:.1f}x (ours is {ratio:.1f} times as fast; "
            "cryptographic and reproducible from its seed)"
        )


if __name__ == "__main__":
    main()
