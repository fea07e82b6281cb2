"""Randomizations per second and latency with 1 and 8 concurrent client processes.

    python benchmarks/bench_randomize.py [--db URL] [--clients 1 8] [--calls 1000]
        [--scrypt-n 1024] [--profile]

One trial (2 strata, 1 dosing visit, two eligibility criteria) is created with
``randomizer init`` and ``list generate``. For each client count, that many real
processes start, each with one :class:`~randomizer.backend.LocalBackend` reused for every
call, as one investigator each. Every client randomizes a few participants to warm up
(connection pool, imports), reports ready and waits; then all start together and
randomize ``--calls`` participants between them (stratum alternating). Printed per run:
throughput (calls / wall time from the first start to the last end), latency p50, p99
and maximum per call, and refusals.

Authentication is reported apart: every operation verifies the user's scrypt password
hash. The users' hashes are made at ``--scrypt-n`` (default 2**10, cheap); the cost of
one ``verify_password`` at that cost and at the production cost
(:data:`randomizer.access.SCRYPT_N`) is timed separately. Run with
``--scrypt-n 32768`` to see throughput including production hashing.

``--profile`` also randomizes ``--profile-calls`` participants in this process under
cProfile and prints where one call's time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from common import (
    BENCH_SCRYPT_N,
    BenchPlace,
    add_common_arguments,
    bench_place,
    create_trial,
    design_toml,
    machine,
    percentile_ms,
    table,
    timed,
)

from randomizer import access
from randomizer.access import Role, hash_password, verify_password
from randomizer.backend import LocalBackend
from randomizer.context import Credentials
from randomizer.errors import RandomizerError

LEVELS = ("PPMS", "SPMS")
ANSWERS = {"age": "40", "consent": "yes"}
SITE = "WAW"


def investigator(index: int) -> tuple[str, str]:
    """The name and password of the ``index``-th benchmark investigator."""
    return f"inv{index}", f"investigator-{index}-password"


def randomize_one(backend: LocalBackend, participant: int, on: date) -> None:
    """Randomize participant number ``participant`` (stratum by parity)."""
    backend.randomize(f"P-{participant:07d}", SITE, {"type": LEVELS[participant % 2]},
                      dict(ANSWERS), on)


# the client process -------------------------------------------------------------------


def client(config: dict[str, Any]) -> int:
    """One client process: warm up, say ready, wait for 'go' on stdin, randomize, report."""
    user, password = str(config["user"]), str(config["password"])
    backend = LocalBackend(str(config["db_url"]), Path(str(config["key_file"])),
                           lambda: Credentials(user, password))
    today = backend.today()
    warmup = [int(p) for p in config["warmup"]]
    timed_ids = [int(p) for p in config["participants"]]
    for participant in warmup:
        randomize_one(backend, participant, today)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 3
    latencies: list[float] = []
    refusals: list[str] = []
    cpu = time.process_time()
    start = time.monotonic()
    for participant in timed_ids:
        begin = time.perf_counter()
        try:
            randomize_one(backend, participant, today)
        except RandomizerError as exc:
            refusals.append(f"{type(exc).__name__}: {exc}")
        latencies.append(time.perf_counter() - begin)
    end = time.monotonic()
    cpu = time.process_time() - cpu
    backend.close()
    print(json.dumps({"start": start, "end": end, "latencies": latencies,
                      "refusals": refusals, "cpu": cpu}), flush=True)
    return 0


# the parent -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """The merged measurements of one run."""

    clients: int
    calls: int
    wall: float
    latencies: list[float]
    refusals: list[str]
    cpu: float
    """Seconds of CPU the client processes used (user + system), all together."""
    load: float
    """The 1-minute load average when the run ended."""

    @property
    def rate(self) -> float:
        """Successful randomizations per second."""
        return (self.calls - len(self.refusals)) / self.wall


def run_clients(place: BenchPlace, clients: int, first: int, calls: int,
                warmup: int) -> RunResult:
    """Start ``clients`` processes randomizing ``calls`` participants from number ``first``."""
    ids = list(range(first + clients * warmup, first + clients * warmup + calls))
    processes = []
    for index in range(clients):
        user, password = investigator(index)
        config = {"db_url": place.db_url, "key_file": str(place.key_file), "user": user,
                  "password": password,
                  "warmup": list(range(first + index * warmup, first + (index + 1) * warmup)),
                  "participants": ids[index::clients]}
        processes.append(subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--client", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            if line != "ready":
                _out, err = process.communicate(timeout=60)
                raise RuntimeError(f"a client failed to start: {line!r} {err}")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = []
        for process in processes:
            out, err = process.communicate(timeout=900)
            if process.returncode != 0:
                raise RuntimeError(f"a client failed (exit {process.returncode}): {err}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    start = min(float(r["start"]) for r in reports)
    end = max(float(r["end"]) for r in reports)
    latencies = [float(x) for r in reports for x in r["latencies"]]
    refusals = [str(x) for r in reports for x in r["refusals"]]
    return RunResult(clients=clients, calls=len(latencies), wall=end - start,
                     latencies=latencies, refusals=refusals,
                     cpu=sum(float(r["cpu"]) for r in reports), load=os.getloadavg()[0])


def password_cost(n: int, repeat: int) -> float:
    """Seconds for one ``verify_password`` against a hash of scrypt cost ``n`` (best of)."""
    stored = hash_password("a benchmark password", n=n)
    best = float("inf")
    for _ in range(repeat):
        ok, seconds = timed(lambda: verify_password("a benchmark password", stored))
        assert ok
        best = min(best, seconds)
    return best


PHASES = (
    ("schema check (Store.check_schema)", "store.py", "check_schema"),
    ("password check (verify_password)", "access.py", "verify_password"),
    ("design parse (parse_design)", "design.py", "parse_design"),
    ("key file + vault (open_vault)", "context.py", "open_vault"),
    ("audit appends (audit.append, 2 per call)", "audit.py", "append"),
    ("randomize body (service.randomize)", "service.py", "randomize"),
    ("commits (Session.commit)", "session.py", "commit"),
    ("  of which the database's COMMIT", "", "commit' of 'sqlite3.Connection' objects>"),
    ("  of which the database's COMMIT", "connection.py", "commit"),
)


def profile(place: BenchPlace, first: int, calls: int) -> None:
    """Randomize ``calls`` participants in-process under cProfile; print the breakdown."""
    user, password = investigator(0)
    backend = place.backend(user, password)
    today = backend.today()
    randomize_one(backend, first, today)  # warm
    profiler = cProfile.Profile()
    profiler.enable()
    for participant in range(first + 1, first + 1 + calls):
        randomize_one(backend, participant, today)
    profiler.disable()
    backend.close()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"\nprofile: {calls} randomize calls in this process, "
          f"{total / calls * 1000:.2f} ms per call under cProfile")
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = \
        stats.stats  # type: ignore[attr-defined]
    rows = []
    for label, file_end, function in PHASES:
        cumulative = max((v[3] for (path, _line, name), v in raw.items()
                          if path.endswith(file_end) and name.endswith(function)), default=0.0)
        if cumulative or not label.startswith("  "):
            rows.append((label, cumulative / calls * 1000, 100 * cumulative / total))
    print(table(rows, ("phase (cumulative, overlapping)", "ms/call", "% of call")))
    print("\ntop functions by own time:")
    stats.sort_stats("tottime").print_stats(15)


def main() -> None:
    """Parse arguments, build the trial, run every client count, print the table."""
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        sys.exit(client(json.loads(sys.argv[2])))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8],
                        help="client process counts to run (default: 1 8)")
    parser.add_argument("--calls", type=int, default=1000,
                        help="timed randomizations per run, split over the clients")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed randomizations per client before the start")
    parser.add_argument("--scrypt-n", type=int, default=BENCH_SCRYPT_N,
                        help="scrypt cost of the users' stored hashes (default 2**10; "
                             f"production is {access.SCRYPT_N})")
    parser.add_argument("--auth-repeat", type=int, default=10,
                        help="verify_password timings per cost (best is reported)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile randomize in this process")
    parser.add_argument("--profile-calls", type=int, default=300)
    args = parser.parse_args()
    clients: list[int] = args.clients
    calls: int = args.calls
    warmup: int = args.warmup
    needed = sum(calls + c * warmup for c in clients) + (args.profile_calls + 1) * args.profile
    per_stratum = needed // len(LEVELS) + 10

    with bench_place(args.db, "randomize", args.workdir) as place:
        print(machine(place))
        users = [(investigator(i)[0], Role.INVESTIGATOR, investigator(i)[1])
                 for i in range(max(clients))]
        admin = create_trial(place, design_toml("bench-randomize", per_stratum,
                                                {"type": list(LEVELS)}), users, args.scrypt_n)
        _summary, seconds = timed(admin.generate_list)
        admin.close()
        print(f"trial: 2 strata x {per_stratum:,} slots, 1 visit; list generated in "
              f"{seconds:.1f} s; users' scrypt cost n={args.scrypt_n}")

        production = password_cost(access.SCRYPT_N, max(3, args.auth_repeat // 3))
        cheap = password_cost(args.scrypt_n, args.auth_repeat)
        cores = os.cpu_count() or 1
        print("\nauthentication (one verify_password, best of several; every operation "
              "does one):")
        print(table([
            (f"production n={access.SCRYPT_N}", production * 1000, cores / production),
            (f"benchmark users n={args.scrypt_n}", cheap * 1000, cores / cheap),
        ], ("stored hash cost", "ms per login", f"logins/s ceiling on {cores} cores")))

        results = []
        first = 1
        for count in clients:
            result = run_clients(place, count, first, calls, warmup)
            first += calls + count * warmup
            results.append(result)
            for refusal in sorted(set(result.refusals))[:5]:
                print(f"  refusal ({count} clients): {refusal}")
        print(f"\nrandomize on {place.engine}, users' hash n={args.scrypt_n} "
              f"({cheap * 1000:.1f} ms of each call is password hashing):")
        print(table([(place.engine, r.clients, r.calls, r.wall, r.rate,
                      percentile_ms(r.latencies, 50), percentile_ms(r.latencies, 99),
                      max(r.latencies) * 1000, len(r.refusals), 1000 * r.cpu / r.calls,
                      r.load) for r in results],
                    ("engine", "clients", "calls", "wall s", "per s", "p50 ms", "p99 ms",
                     "max ms", "refused", "client CPU ms/call", "load avg")))
        print("(client CPU: user + system time of the client processes per call; the "
              "database server's CPU is not included. load avg: the machine's 1-minute "
              "load when the run ended; above the core count, other work competed.)")
        if args.profile:
            profile(place, first, args.profile_calls)


if __name__ == "__main__":
    main()
