"""Shared helpers of the benchmarks: a throwaway database, a trial in it, timing and tables.

Every benchmark takes ``--db``: ``sqlite`` (the default) puts a SQLite file in a fresh
temporary directory under ``--workdir``; a ``postgresql+psycopg://user@host:port/db`` URL
names a PostgreSQL *server*, on which a fresh database ``bench_<name>_<hex>`` is created
and dropped afterwards (``WITH (FORCE)``). Nothing here is timed; the benchmarks time
what they mean to measure themselves.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import math
import os
import platform
import pstats
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import sqlalchemy
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from randomizer import access  # noqa: E402
from randomizer.access import Role  # noqa: E402
from randomizer.backends.local import LocalBackend  # noqa: E402
from randomizer.context import Credentials  # noqa: E402
from randomizer.signatures import Signature, meaning_of  # noqa: E402
from tests.support import designs  # noqa: E402
from tests.support.database import scratch_database  # noqa: E402

T = TypeVar("T")

ADMIN = "admin"
PASSWORDS = {
    "admin": "bench-admin-password",
    "statistician": "bench-statistician-password",
    "approver": "bench-approver-password",
}
APPROVER = "approver"
"""The second admin who approves a benchmark trial's list (its generator may not)."""
BENCH_SCRYPT_N = 2**10
"""scrypt cost of the benchmark users' hashes: cheap, so that 'excluding password
hashing' numbers are not dominated by it (parameters are stored beside each hash)."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--db`` and ``--workdir``, shared by every benchmark."""
    parser.add_argument(
        "--db",
        default="sqlite",
        metavar="URL",
        help="'sqlite' (default: a file in a temporary directory) or a "
        "PostgreSQL server URL such as postgresql+psycopg://postgres@"
        "127.0.0.1:54329/postgres (a fresh database is created on it "
        "and dropped afterwards)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help="where temporary files (SQLite database, key file) go "
        "(default: the system temporary directory)",
    )


@dataclass(frozen=True)
class BenchPlace:
    """Where one benchmark's trial lives."""

    db_url: str
    key_file: Path
    directory: Path
    engine: str
    """``sqlite`` or ``postgresql``."""

    def backend(self, user: str, password: str) -> LocalBackend:
        """A backend acting as ``user``."""
        return LocalBackend(self.db_url, self.key_file, lambda: Credentials(user, password))


@contextmanager
def bench_place(db: str, name: str, workdir: str | None = None) -> Iterator[BenchPlace]:
    """A fresh, empty database and a directory for the key file; removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix=f"bench_{name}_", dir=workdir))
    try:
        if db == "sqlite" or make_url(db).get_backend_name() == "sqlite":
            yield BenchPlace(
                f"sqlite:///{directory / 'trial.db'}", directory / "trial.key", directory, "sqlite"
            )
            return
        with scratch_database(db, f"bench_{name}") as url:
            yield BenchPlace(url, directory / "trial.key", directory, "postgresql")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def scrypt_cost(n: int) -> Iterator[None]:
    """Hash new passwords at scrypt cost ``n`` in this process (as the tests' fixture does)."""
    saved = access.SCRYPT_N
    access.SCRYPT_N = n
    try:
        yield
    finally:
        access.SCRYPT_N = saved


def create_trial(
    place: BenchPlace,
    design_toml: str,
    users: Iterable[tuple[str, Role, str]] = (),
    scrypt_n: int = BENCH_SCRYPT_N,
) -> LocalBackend:
    """``randomizer init`` with ``design_toml`` plus ``users``; returns the admin's backend.

    Every hash, the admin's included, is made at scrypt cost ``scrypt_n``.
    """
    admin = place.backend(ADMIN, PASSWORDS[ADMIN])
    with scrypt_cost(scrypt_n):
        admin.init(design_toml, "design.toml", ADMIN, PASSWORDS[ADMIN])
        for name, role, password in users:
            admin.add_user(name, role, password)
    return admin


def approve_list(place: BenchPlace, scrypt_n: int = BENCH_SCRYPT_N) -> None:
    """Add :data:`APPROVER` (a second admin) and approve the generated draft list for go-live."""
    admin = place.backend(ADMIN, PASSWORDS[ADMIN])
    with scrypt_cost(scrypt_n):
        admin.add_user(APPROVER, Role.ADMIN, PASSWORDS[APPROVER])
    admin.close()
    approver = place.backend(APPROVER, PASSWORDS[APPROVER])
    approver.approve_list(signature=Signature(PASSWORDS[APPROVER], meaning_of("list.approve")))
    approver.close()


def design_toml(
    trial_id: str,
    stratum_length: int,
    factors: dict[str, list[str]],
    visits: int = 1,
    block_sizes: Sequence[int] = (2, 4, 6),
    criteria: bool = True,
) -> str:
    """A 1:1 two-arm design; ``spare_fraction`` 0, ``visits`` dosing visits 28 days apart."""
    return designs.design_toml(
        trial_id=trial_id,
        title=f"Benchmark trial {trial_id}",
        planned_participants=stratum_length * math.prod(len(v) for v in factors.values()),
        stratum_length=stratum_length,
        arms=["active", "placebo"],
        block_sizes=block_sizes,
        factors=factors,
        criteria=[designs.AGE, designs.must_be_yes("consent", "Written consent?")]
        if criteria
        else (),
        visits=[(f"Visit {n + 1}", 28 * n, 0 if n == 0 else 3) for n in range(visits)],
        spare_fraction=0.0,
    )


# timing and reporting -------------------------------------------------------------------


def print_profile(profiler: cProfile.Profile, what: str) -> None:
    """Print a cProfile of ``what``: the top functions by own time, then by cumulative time."""
    print(f"cProfile of {what}, top functions by own time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    print("by cumulative time:")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def timed(run: Callable[[], T]) -> tuple[T, float]:
    """``run()`` and its wall time in seconds."""
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def best_of(run: Callable[[], object], repeat: int) -> float:
    """The shortest wall time of ``repeat`` runs, in seconds."""
    return min(timed(run)[1] for _ in range(max(1, repeat)))


def percentile_ms(latencies: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of latencies (seconds) in milliseconds."""
    return float(np.percentile(np.asarray(latencies), q)) * 1000.0


def max_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB.

    Read from ``VmHWM`` in /proc/self/status, the high-water mark of this process's own
    memory: ``ru_maxrss`` would do in a process of its own, but Linux carries it over
    from the parent through fork and exec, so a child started by a large benchmark
    process would report the parent's peak. ``ru_maxrss`` where /proc is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    lines = []
    for row in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if right else c.ljust(w)
                for c, w, right in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine(place: BenchPlace | None = None) -> str:
    """One line about the machine, Python and the database engine."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    text = (
        f"{os.cpu_count()} CPUs ({cpu}), {memory:.0f} GiB RAM, Python "
        f"{platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}"
    )
    if place is not None:
        text += f"; {engine_version(place.db_url)}"
    return text


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (/proc/loadavg) and the number of CPUs.

    The benchmark machine is shared: a load above the CPU count means other work
    competed for the CPUs during the run.
    """
    try:
        one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    except (OSError, ValueError):
        return "unknown"
    return f"{one} {five} {fifteen} on {os.cpu_count()} CPUs"


def engine_version(db_url: str) -> str:
    """The database engine and its version (and, for PostgreSQL, its durability settings)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                version = conn.exec_driver_sql("select sqlite_version()").scalar()
                return f"SQLite {version} (WAL, synchronous=FULL)"
            version = conn.exec_driver_sql("show server_version").scalar()
            fsync = conn.exec_driver_sql("show fsync").scalar()
            commit = conn.exec_driver_sql("show synchronous_commit").scalar()
            return f"PostgreSQL {version} (fsync={fsync}, synchronous_commit={commit})"
    finally:
        engine.dispose()


def server_cpu_seconds(db_url: str) -> float | None:
    """CPU seconds used so far by a PostgreSQL server's processes on this machine.

    The sum over the postmaster's live children (backends, background workers), read
    from /proc; None for SQLite, a remote server, or when it cannot be read. Take the
    difference around a measurement while its connection is still open (a backend's
    CPU leaves the sum when it exits).
    """
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql" or url.host not in ("127.0.0.1", "localhost"):
        return None
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            directory = conn.exec_driver_sql("show data_directory").scalar()
        postmaster = int((Path(str(directory)) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, sqlalchemy.exc.SQLAlchemyError):
        return None
    finally:
        engine.dispose()
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == postmaster:  # ppid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def copy_rows(
    conn: Connection, table_name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Bulk-insert plain rows (str/int/bytes/None) in ``conn``'s transaction.

    PostgreSQL: ``COPY ... FROM STDIN``; SQLite: the driver's ``executemany``. Values are
    passed as they are, with no SQLAlchemy type processing: give each in its stored form.
    """
    driver: Any = conn.connection.driver_connection  # psycopg or sqlite3 connection
    names = ", ".join(f'"{c}"' for c in columns)
    if conn.dialect.name == "postgresql":
        with driver.cursor() as cursor:
            with cursor.copy(f"COPY {table_name} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    cursor = driver.cursor()
    try:
        cursor.executemany(f"INSERT INTO {table_name} ({names}) VALUES ({marks})", rows)
    finally:
        cursor.close()


def child_figures(command: Sequence[str], what: str) -> dict[str, Any]:
    """Run a benchmark's child process (so its peak memory is its own); the JSON figures
    it printed last. A failed child ends the benchmark, naming ``what`` failed."""
    done = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def add_quick_and_verify_arguments(
    parser: argparse.ArgumentParser, quick: int, verified: str
) -> None:
    """``--quick`` (``quick`` participants only) and ``--verify-up-to N`` (also run
    ``verified``, not timed, on lists of up to N participants)."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{quick:,} participants only: checks that the benchmark works, not how fast",
    )
    parser.add_argument(
        "--verify-up-to",
        type=int,
        default=20_000,
        metavar="N",
        help=f"also run {verified} (not timed) on lists of up to N participants "
        "(default 20,000: it loads ORM objects)",
    )


def load_randomization() -> ModuleType | None:
    """PyPI ``randomization`` (the ``bench`` extra), or None when it is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its source compares literals with `is`
            return importlib.import_module("randomization")
    except ImportError:
        return None


def randomization_run(
    module: ModuleType, participants: int, sizes: Sequence[int]
) -> Callable[[], Any]:
    """One call of its ``random_block`` (two arms, ``sizes``), leaving the caller's
    ``random`` state as it was (it reseeds the global ``random`` module)."""

    def run() -> Any:
        state = random.getstate()
        try:
            return module.random_block(participants, 2, list(sizes), seed=20240101)
        finally:
            random.setstate(state)

    return run
