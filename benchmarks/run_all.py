"""Run every benchmark: quickly, to check that each still works, or in full for the docs.

    python benchmarks/run_all.py --quick [--db URL ...]
    python benchmarks/run_all.py [--db URL ...] [--print] [--only NAME ...]

``--quick`` runs every ``benchmarks/bench_*.py`` with ``--quick`` (a small size, one
run) in its own process and checks that it exits with 0 and prints its figures (a
table); it says nothing of speed. All of them take well under a minute together. CI
runs it (``.ci/run``). A ``bench_*.py`` that is not listed in :data:`BENCHMARKS` fails
the check, so a new benchmark cannot be forgotten.

Without ``--quick`` each benchmark runs at the sizes of its issue targets (see
:data:`BENCHMARKS`: several minutes in all), and the section between the markers
``<!-- run_all: begin -->`` and ``<!-- run_all: end -->`` of ``docs/performance.md`` is
rewritten with what they printed: the date, the commit, the machine, the load average
before and after each run, each command and its output. ``--print`` prints that section
instead of writing it. ``--db`` (repeatable; default ``sqlite``) runs the benchmarks
that use a database once per database, e.g. ``--db sqlite --db
postgresql+psycopg://postgres@127.0.0.1:54329/postgres``.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import load_average, machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN = "<!-- run_all: begin -->"
END = "<!-- run_all: end -->"
QUICK_BUDGET_SECONDS = 60.0


@dataclass(frozen=True)
class Benchmark:
    """How run_all runs one benchmark script."""

    database: bool
    """Whether it takes ``--db`` (run once per database)."""
    full: tuple[str, ...] = ()
    """Arguments of the full run (its targets' sizes)."""


BENCHMARKS: dict[str, Benchmark] = {
    "bench_generator.py": Benchmark(database=False),
    "bench_preview.py": Benchmark(database=False),
    "bench_list.py": Benchmark(database=True),  # 10,000 and 100,000 participants
    "bench_export.py": Benchmark(database=True),
    "bench_randomize.py": Benchmark(database=True),
    "bench_audit.py": Benchmark(database=True),
    "bench_api.py": Benchmark(database=True),
    "bench_login.py": Benchmark(database=True),
    "bench_rotate.py": Benchmark(database=True),  # 100,000 participants
    "bench_startup.py": Benchmark(database=False),
    "bench_peers.py": Benchmark(database=False),
    "bench_verify.py": Benchmark(database=True),  # 100,000 participants
    "bench_lookup.py": Benchmark(database=True),  # 100,000 participants
}
"""Every benchmark script, in the order run_all runs them."""

TABLE_RULE = re.compile(r"^-{3,}(  -{2,})+\s*$", re.MULTILINE)
"""A table's rule line as common.table prints it (the sign that figures were printed)."""


@dataclass(frozen=True)
class Outcome:
    """One benchmark run."""

    command: list[str]
    seconds: float
    code: int
    output: str
    load_before: str
    load_after: str

    @property
    def ok(self) -> bool:
        """Exited with 0 and printed at least one table (or, for the generator, figures)."""
        return self.code == 0 and bool(TABLE_RULE.search(self.output) or "seconds" in self.output)


def scripts() -> list[str]:
    """The benchmark scripts in this directory; refuse any that BENCHMARKS does not list."""
    found = sorted(p.name for p in HERE.glob("bench_*.py"))
    missing = [name for name in found if name not in BENCHMARKS]
    if missing:
        raise SystemExit(
            f"run_all.py does not know {', '.join(missing)}: add it to "
            "BENCHMARKS (and give it --quick)"
        )
    return [name for name in BENCHMARKS if name in found]


def run(name: str, arguments: list[str]) -> Outcome:
    """Run one benchmark script in its own process; its output and exit code."""
    command = [sys.executable, str(HERE / name), *arguments]
    before = load_average()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    seconds = time.perf_counter() - start
    output = done.stdout + (f"\n[stderr]\n{done.stderr}" if done.returncode else "")
    return Outcome(command, seconds, done.returncode, output, before, load_average())


def shown(command: list[str]) -> str:
    """A command as it would be typed from the repository root."""
    return " ".join(
        [
            "python",
            *(
                str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT)) else c
                for c in command[1:]
            ),
        ]
    )


def runs(quick: bool, databases: list[str], only: list[str]) -> list[Outcome]:
    """Run the benchmarks (all, or ``only``), each once per database if it takes one."""
    outcomes = []
    for name in scripts():
        if only and name not in only and name.removesuffix(".py") not in only:
            continue
        benchmark = BENCHMARKS[name]
        arguments = ["--quick"] if quick else list(benchmark.full)
        for db in databases if benchmark.database else [None]:
            extra = [] if db is None or db == "sqlite" else ["--db", db]
            outcome = run(name, [*arguments, *extra])
            print(
                f"{'ok  ' if outcome.ok else 'FAIL'} {outcome.seconds:6.1f} s  "
                f"{shown(outcome.command)}",
                flush=True,
            )
            if not outcome.ok:
                print(outcome.output)
            outcomes.append(outcome)
    return outcomes


def section(outcomes: list[Outcome]) -> str:
    """The generated part of docs/performance.md."""
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        ).stdout.strip()
        or "unknown"
    )
    dirty = subprocess.run(
        [
            "git",
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            f":!{DOC.relative_to(ROOT)}",
        ],  # the page being written
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    ).stdout.strip()
    lines = [
        BEGIN,
        "",
        f"Generated by `python benchmarks/run_all.py` on "
        f"{datetime.date.today().isoformat()} at commit `{commit}`"
        f"{' (with uncommitted changes)' if dirty else ''}.",
        f"Machine: {machine()}. Load averages (1, 5, 15 minutes) are /proc/loadavg "
        "before and after each run; a load above the CPU count means other work "
        "shared the CPUs.",
        "",
    ]
    for outcome in outcomes:
        lines += [
            f"`{shown(outcome.command)}` ({outcome.seconds:.0f} s; load "
            f"{outcome.load_before} before, {outcome.load_after} after)",
            "",
            "```text",
            outcome.output.rstrip(),
            "```",
            "",
        ]
    lines.append(END)
    return "\n".join(lines)


def write_doc(text: str) -> None:
    """Replace the generated section of docs/performance.md (appended if it has none)."""
    doc = DOC.read_text(encoding="utf-8")
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + text + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n## Latest full run\n\n" + text + "\n"
    DOC.write_text(doc, encoding="utf-8")


def main() -> None:
    """Run the benchmarks; check them (--quick) or regenerate the doc's figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="every benchmark at a small size: does each still run?"
    )
    parser.add_argument(
        "--db",
        action="append",
        metavar="URL",
        help="'sqlite' or a PostgreSQL server URL; repeat for several (default: sqlite)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="NAME",
        help="run only these benchmarks (e.g. bench_list)",
    )
    parser.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the doc section instead of writing docs/performance.md",
    )
    args = parser.parse_args()
    databases: list[str] = args.db or ["sqlite"]
    start = time.perf_counter()
    outcomes = runs(args.quick, databases, args.only)
    total = time.perf_counter() - start
    failed = [o for o in outcomes if not o.ok]
    print(
        f"{len(outcomes) - len(failed)} of {len(outcomes)} benchmark runs ok in "
        f"{total:.0f} s (load average now {load_average()})"
    )
    if failed:
        sys.exit(1)
    if args.quick:
        if total > QUICK_BUDGET_SECONDS:
            print(f"note: --quick took more than {QUICK_BUDGET_SECONDS:.0f} s")
        return
    text = section(outcomes)
    if args.print_only:
        print(text)
    else:
        write_doc(text)
        print(f"wrote the generated section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
