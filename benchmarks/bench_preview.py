"""``list preview --json`` / ``--csv`` for a long list: time and peak memory of the command.

    python benchmarks/bench_preview.py [--participants 1000000] [--repeat 3] [--workdir DIR]
        [--source CHECKOUT] [--formats json csv] [--quick]

The command ``randomizer list preview --design exosome-ms --seed S --participants N``
(one stratum of N slots) runs in a subprocess (``python -m randomizer``, by way of a small
wrapper) with its standard output sent to a file in a temporary directory, once with
``--json`` and once with ``--csv``, best of ``--repeat`` each. Its wall time and CPU time
(user + system) come from ``os.wait4``; its peak resident set size from ``VmHWM`` of
/proc/self/status, which the wrapper prints as the command exits (``ru_maxrss`` would
include this benchmark's own peak, which Linux carries over to a child).

It is compared with:

- the generator alone: ``generate_schedule`` for the same list, in this process, best of
  ``--repeat``;
- writing the bytes: the command's output size written to a file in the same directory
  in 1 MiB pieces from this process, best of ``--repeat``;
- the same command for a one-block list (``--participants 1``): what starting Python and
  importing the command line cost, shown for scale.

The command's own time is measured inside the child, from after its imports to its exit
(the wrapper imports ``randomizer.commands`` first): parsing, generating, laying out and
writing the rows. Target (issue 13, item 2): that own time under 2 x the generator's
time plus the time to write the bytes; peak RSS under 150 MiB.
``--source`` runs the command from another checkout (e.g. an older commit, to compare).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, load_average, machine, table

from randomizer.allocation.generator import generate_schedule
from randomizer.allocation.stream import parse_seed
from randomizer.design import load_design

SEED = "7d1e6a0c3b9f4e2d8a5c1b7e0f3d6a9c2e5b8d1f4a7c0e3b6d9f2a5c8e1b4d70"
DESIGN = "exosome-ms"
TARGET_RSS_MIB = 150.0
QUICK_PARTICIPANTS = 20_000


@dataclass(frozen=True)
class Run:
    """One run of the command in a subprocess."""

    wall: float
    cpu: float
    own_wall: float
    own_cpu: float
    rss_mib: float
    output_bytes: int


# Runs the command line in the child process itself: imports the command line first,
# then times the command (its "own" time: parsing, generating, writing), and reports
# that and the process's peak RSS as it exits (VmHWM: ru_maxrss would carry this
# benchmark's own peak over through fork and exec).
_MEASURED = """
import atexit, runpy, sys, time
import randomizer.commands
start, start_cpu = time.perf_counter(), time.process_time()
def report():
    own, own_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\nMEASURED {own} {own_cpu} {peak}\\n")
atexit.register(report)
sys.argv[0] = "randomizer"
runpy.run_module("randomizer", run_name="__main__", alter_sys=True)
"""


def run_command(source: Path, participants: int, flag: str, out: Path) -> Run:
    """``randomizer list preview ... flag`` in a child process, stdout to ``out``."""
    args = [
        sys.executable,
        "-c",
        _MEASURED,
        "list",
        "preview",
        "--design",
        DESIGN,
        "--seed",
        SEED,
        "--participants",
        str(participants),
        flag,
    ]
    env = {**os.environ, "PYTHONPATH": str(source)}
    with out.open("wb") as sink:
        start = time.perf_counter()
        child = subprocess.Popen(args, stdout=sink, stderr=subprocess.PIPE, cwd=source, env=env)
        assert child.stderr is not None
        error = child.stderr.read().decode(errors="replace")  # until the child closes it
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    measured = re.search(r"^MEASURED (\S+) (\S+) (\d+)$", error, re.MULTILINE)
    if child.returncode != 0 or measured is None:
        raise SystemExit(f"the command failed ({child.returncode}): {error}")
    own, own_cpu, peak = measured.groups()
    return Run(
        wall,
        usage.ru_utime + usage.ru_stime,
        float(own),
        float(own_cpu),
        int(peak) / 1024,
        out.stat().st_size,
    )


def best_run(source: Path, participants: int, flag: str, out: Path, repeat: int) -> Run:
    """The least of each time over ``repeat`` runs; peak RSS is the largest seen."""
    runs = [run_command(source, participants, flag, out) for _ in range(max(1, repeat))]
    return Run(
        min(r.wall for r in runs),
        min(r.cpu for r in runs),
        min(r.own_wall for r in runs),
        min(r.own_cpu for r in runs),
        max(r.rss_mib for r in runs),
        runs[0].output_bytes,
    )


def best_of(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """The least wall time and the least CPU time (this process) of ``repeat`` runs."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(max(1, repeat)):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def write_seconds(size: int, out: Path, repeat: int) -> tuple[float, float]:
    """Wall and CPU time to write ``size`` bytes to ``out`` in 1 MiB pieces (best)."""
    piece = b"x" * 2**20

    def write() -> None:
        with out.open("wb") as sink:
            for offset in range(0, size, len(piece)):
                sink.write(piece[: size - offset])

    try:
        return best_of(write, repeat)
    finally:
        out.unlink()


def generator_seconds(participants: int, repeat: int) -> tuple[float, float]:
    """Wall and CPU time of ``generate_schedule`` for the benchmark's list (best)."""
    design, seed = load_design(DESIGN), parse_seed(SEED)
    generate_schedule(design, seed, participants)  # warm-up (imports, plan cache)
    return best_of(lambda: generate_schedule(design, seed, participants), repeat)


def main() -> None:
    """Time the command and its baselines; print the table and whether the targets hold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help="where the output files go (default: the system temporary directory)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        metavar="CHECKOUT",
        help="run the command from this checkout (default: this one)",
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=("json", "csv"),
        default=["json", "csv"],
        help="which outputs to time (an older checkout may have no --csv)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_PARTICIPANTS:,} participants, one run each: checks "
        "that the benchmark works, not how fast",
    )
    args = parser.parse_args()
    participants: int = QUICK_PARTICIPANTS if args.quick else args.participants
    repeat: int = 1 if args.quick else args.repeat
    source: Path = args.source.resolve()

    print(machine())
    print(f"load average before: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench_preview_", dir=args.workdir) as directory:
        out = Path(directory) / "out"
        fixed = best_run(source, 1, "--json", out, repeat)
        generator = generator_seconds(participants, repeat)
        rows = []
        verdicts = []
        for flag in (f"--{name}" for name in args.formats):
            run = best_run(source, participants, flag, out, repeat)
            write = write_seconds(run.output_bytes, out, repeat)
            limit = (2 * generator[0] + write[0], 2 * generator[1] + write[1])
            rows.append(
                (
                    f"list preview {flag}",
                    participants,
                    run.output_bytes / 2**20,
                    run.wall,
                    run.cpu,
                    run.own_wall,
                    limit[0],
                    run.own_cpu,
                    limit[1],
                    run.rss_mib,
                )
            )
            verdicts.append(
                (
                    flag,
                    run.own_wall < limit[0],
                    run.own_cpu < limit[1],
                    run.rss_mib < TARGET_RSS_MIB,
                )
            )
    print(f"load average after: {load_average()}")
    print(f"\n{DESIGN}, {participants:,} participants (one stratum), command run from {source}")
    print(
        f"the command for --participants 1: {fixed.wall:.2f} s wall, {fixed.cpu:.2f} s CPU "
        f"({fixed.own_wall:.3f} s after its imports), {fixed.rss_mib:.0f} MiB"
    )
    print(f"generator alone: {generator[0]:.3f} s wall, {generator[1]:.3f} s CPU")
    print(
        "own = the command after its imports (parsing, generating, writing); "
        "limit = 2 x generator + writing the bytes"
    )
    print(
        table(
            rows,
            (
                "command",
                "participants",
                "output MiB",
                "wall s",
                "CPU s",
                "own wall s",
                "limit wall s",
                "own CPU s",
                "limit CPU s",
                "peak RSS MiB",
            ),
        )
    )
    for flag, fast_wall, fast_cpu, small in verdicts:
        print(
            f"{flag}: own time under the limit: wall {'yes' if fast_wall else 'NO'}, CPU "
            f"{'yes' if fast_cpu else 'NO'}; peak RSS under {TARGET_RSS_MIB:.0f} MiB: "
            f"{'yes' if small else 'NO'}"
        )


if __name__ == "__main__":
    main()
