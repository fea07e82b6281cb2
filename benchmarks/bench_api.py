"""Randomizations per second and latency through the trial server's API, beside the library.

    python benchmarks/bench_api.py [--db URL] [--clients 1 8] [--calls 1000] [--no-library]
        [--profile-calls 200] [--workers 1] [--quick]

One trial is made as ``bench_randomize.py`` makes it (2 strata, 1 dosing visit, two
eligibility criteria, investigators ``inv0``.. with cheap scrypt hashes) and its list
generated. Then, in this order:

1. **The library**: ``bench_randomize.run_clients`` with 1 and 8 client processes, each
   holding a :class:`~randomizer.backends.local.LocalBackend` (the key file and the
   database opened in the client), exactly as ``bench_randomize.py`` measures it.
2. **The token check alone**, in this process on the trial's database:
   :func:`randomizer.logins.principal_for` (what every API request runs before its
   operation) against resolving the token in a write transaction of its own (what every
   request ran before the check learned to read), per call.
3. **The API**: a real ``randomizer serve`` process (``python -m randomizer ... serve``,
   one worker, its access log in a file) and the same ``run_clients`` with 1 and 8 client
   processes, each holding an :class:`~randomizer.backends.http.HttpBackend` logged in
   with its password during the warm-up. Throughput is calls over the wall time from the
   first start to the last end; latency is per call as the client sees it. The server
   process's CPU per call is read from /proc.
4. **The server's CPU by part**: the app ``randomizer serve`` runs
   (:func:`~randomizer.server.app.create_app`) called in this process as ASGI, no
   socket and no uvicorn: ``--profile-calls`` randomizations for the app's CPU per
   call with its worker threads, as many with the thread hops run inline, and as many
   again inline under cProfile for the
   shares of the token check, the signature check, the operation, the request body's
   validation, the response and the rest (Starlette, FastAPI, middleware). The server
   process's CPU per call less this app CPU is uvicorn's: sockets, HTTP parsing,
   worker threads. Run before the floor, whose hand-written SQL leaves rows unsealed.
5. **The floor**: ``bench_randomize.floor``, one randomization after another in this
   process through :class:`~randomizer.backends.local.LocalBackend` and through the same
   SQL written by hand on the raw driver, wall and CPU per call.
6. **Round trips** from this process with one keep-alive connection: ``GET
   /api/v1/health`` (no login, no database), ``GET /api/v1/design`` (token check and one
   read) and ``GET /api/v1/report`` (token check and an audited operation, as an
   investigator).

At the end, **where one API randomization's time goes** at 1 client: the client's CPU
(HttpBackend, JSON), the server process's CPU split into the library (the floor's
``LocalBackend.randomize`` CPU) and the HTTP layer (the rest: uvicorn, FastAPI, the
token check, JSON), the database server's CPU (PostgreSQL, read from /proc), and the
wait left over (network, scheduling, fsync). Targets (issue 13 item 4), 8 clients and
1,000 randomizations through the server: PostgreSQL >= 300/s, SQLite >= 200/s, p99 <
100 ms.

The machine's load (/proc/loadavg) is printed at the start and after each run.
``--quick`` uses small sizes (a few seconds) and checks that everything runs;
``--no-library`` skips step 1; ``--workers N`` starts ``serve --workers N`` (the server
CPU per call is then the whole process tree's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
from bench_randomize import (
    ANSWERS,
    LEVELS,
    SITE,
    RunResult,
    _server_cpu,
    floor,
    investigator,
    run_clients,
)
from common import (
    BENCH_SCRYPT_N,
    BenchPlace,
    add_common_arguments,
    approve_list,
    bench_place,
    create_trial,
    design_toml,
    machine,
    percentile_ms,
    server_cpu_seconds,
    table,
    timed,
)

from randomizer import audit, logins
from randomizer.access import Role
from randomizer.context import Credentials
from randomizer.server.app import create_app
from randomizer.server.main import ServeOptions, open_state
from randomizer.sessions import resolve_token
from randomizer.signatures import meaning_of
from randomizer.store import Store
from randomizer.vault import read_key_file
from tests.support.processes import server_process


def loadavg() -> str:
    """The machine's load averages (1, 5, 15 minutes) as /proc/loadavg gives them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and of its live descendants (``serve --workers N``)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grown = {pid}, True
    while grown:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    return sum(_server_cpu(member) for member in tree)


def per_call(run: Callable[[], object], calls: int) -> list[float]:
    """Wall seconds of each of ``calls`` calls of ``run``."""
    return [timed(run)[1] for _ in range(calls)]


def token_check(place: BenchPlace, calls: int) -> list[tuple[str, list[float]]]:
    """Per-call seconds of the token check, as the server runs it now and as it did before."""
    store = Store(place.db_url)
    try:
        user, password = investigator(0)
        issued = logins.login(
            store,
            lambda: read_key_file(place.key_file),
            Credentials(user, password),
            audit.now_utc(),
        )

        def in_write_transaction() -> None:
            with store.transaction() as session:
                resolve_token(session, issued.token, audit.now_utc())

        def now() -> None:
            logins.principal_for(store, issued.token, audit.now_utc())

        now()  # warm: connection, statement cache
        return [
            ("principal_for (every request, now)", per_call(now, calls)),
            (
                "resolve_token in a write transaction (before)",
                per_call(in_write_transaction, calls),
            ),
        ]
    finally:
        store.dispose()


def round_trips(url: str, calls: int) -> list[tuple[str, list[float]]]:
    """Per-call seconds of three GETs over one keep-alive connection, as investigator 0."""
    user, password = investigator(0)
    with httpx.Client(base_url=f"{url}/api/v1", timeout=60) as client:
        response = client.post("/auth/token", json={"user": user, "password": password})
        response.raise_for_status()
        bearer = {"Authorization": f"Bearer {response.json()['token']}"}
        rows = []
        for label, path, headers in (
            ("GET /health (no login, no database)", "/health", {}),
            ("GET /design (token check + one read)", "/design", bearer),
            ("GET /report (token check + audited operation)", "/report", bearer),
        ):

            def get(path: str = path, headers: dict[str, str] = headers) -> None:
                client.get(path, headers=headers).raise_for_status()

            get()  # warm
            rows.append((label, per_call(get, calls)))
        client.post("/auth/logout", headers=bearer).raise_for_status()
    return rows


def latency_rows(rows: list[tuple[str, list[float]]]) -> list[tuple[str, float, float, float]]:
    """(label, mean, p50, p99) in milliseconds."""
    return [
        (
            label,
            1000 * sum(seconds) / len(seconds),
            percentile_ms(seconds, 50),
            percentile_ms(seconds, 99),
        )
        for label, seconds in rows
    ]


def breakdown(
    results: list[tuple[str, RunResult, str, float | None]],
    database_cpu: dict[int, float | None],
    floor_rows: list[tuple[str, float, float, float]],
) -> list[tuple[str, float, str]]:
    """Split the 1-client API call's p50 latency into client, HTTP, library, database."""
    api = next((r, cpu) for path, r, _load, cpu in results if path == "API" and r.clients == 1)
    result, server_cpu = api
    latency = percentile_ms(result.latencies, 50)
    client = 1000 * result.cpu / result.calls
    library = floor_rows[0][2]  # LocalBackend.randomize: client CPU ms per call
    library_db = floor_rows[0][3]
    database = database_cpu.get(1)
    server = server_cpu or 0.0
    http = max(server - library, 0.0)
    rows = [
        ("latency, p50", latency, "as the client sees it"),
        ("client CPU", client, "HttpBackend in the client process: JSON, httpx"),
        ("server: library CPU", library, "floor's LocalBackend.randomize CPU in one process"),
        ("server: HTTP layer CPU", http, "server process CPU less the library's"),
        (
            "database server CPU",
            database if database is not None else library_db,
            "PostgreSQL backends (/proc); SQLite runs inside the library",
        ),
    ]
    accounted = client + server + (database or 0.0)
    rows.append(("wait (rest)", max(latency - accounted, 0.0), "latency less the CPU above"))
    return rows


# the server's CPU by part, in this process ----------------------------------------

PARTS = (
    ("token check (logins.principal_for)", "logins.py", "principal_for"),
    ("signature check (logins.sign)", "logins.py", "sign"),
    ("the operation (context.operation + service.randomize)", "local.py", "randomize"),
    ("request body: JSON + pydantic validation", "utils.py", "request_body_to_args"),
    ("response: serialize_response", "routing.py", "serialize_response"),
)
"""The parts of one API randomization timed under cProfile, by (file, function)."""


@contextlib.contextmanager
def inline_threadpool() -> Iterator[None]:
    """Run FastAPI's sync dependencies and endpoints on the event loop's own thread.

    cProfile sees one thread only; the worker-thread hops themselves are then not
    measured (they are in the server process's CPU, not in this one's).
    """
    original = anyio.to_thread.run_sync

    async def inline(func: Callable[..., Any], *args: Any, **_options: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = inline  # type: ignore[assignment]
    try:
        yield
    finally:
        anyio.to_thread.run_sync = original


async def asgi_call(app: Any, method: str, path: str, body: Any, token: str | None) -> Any:
    """One request straight into the ASGI app (no socket, no HTTP parser); its JSON answer."""
    raw = json.dumps(body).encode() if body is not None else b""
    headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(raw)).encode()))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    status = 0
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    answer = b"".join(chunks)
    if status >= 300:
        raise RuntimeError(f"{method} {path} answered {status}: {answer[:200]!r}")
    return json.loads(answer) if answer else None


def asgi_profile(place: BenchPlace, first: int, calls: int) -> list[tuple[str, float, str]]:
    """The server's CPU per API randomization by part, the app called in this process.

    The app of ``randomizer serve`` (:func:`~randomizer.server.app.create_app`) is
    called directly as ASGI, one request after another, its thread hops inlined
    (:func:`inline_threadpool`): first ``calls`` randomizations for the CPU per call
    without a profiler, then ``calls`` more under cProfile, whose shares of the
    parts (:data:`PARTS`) are scaled to the CPU without it. What the app's CPU does
    not cover of the server process's (read by the API run) is uvicorn: sockets,
    HTTP parsing, the worker threads.
    """
    state = open_state(ServeOptions(db_url=place.db_url, key_file=place.key_file))
    app = create_app(state, audit_lifecycle=False)
    user, password = investigator(0)

    def body(number: int) -> dict[str, Any]:
        return {
            "participant": f"P-{number:07d}",
            "site": SITE,
            "levels": {"type": LEVELS[number % 2]},
            "answers": dict(ANSWERS),
            "date": None,
            "signature": {"password": password, "meaning": meaning_of("randomize")},
        }

    async def run(numbers: Sequence[int], token: str) -> None:
        for number in numbers:
            await asgi_call(app, "POST", "/api/v1/participants", body(number), token)

    async def login() -> str:
        issued = await asgi_call(
            app, "POST", "/api/v1/auth/token", {"user": user, "password": password}, None
        )
        return str(issued["token"])

    try:
        token = asyncio.run(login())
        asyncio.run(run(range(first, first + 3), token))  # warm
        numbers = range(first + 3, first + 3 + calls)
        cpu = time.process_time()
        asyncio.run(run(numbers, token))
        threaded_cpu = 1000 * (time.process_time() - cpu) / calls
        with inline_threadpool():
            numbers = range(first + 3 + calls, first + 3 + 2 * calls)
            cpu = time.process_time()
            asyncio.run(run(numbers, token))
            app_cpu = 1000 * (time.process_time() - cpu) / calls
            profiler = cProfile.Profile()
            profiled = range(first + 3 + 2 * calls, first + 3 + 3 * calls)
            profiler.enable()
            asyncio.run(run(profiled, token))
            profiler.disable()
    finally:
        state.store.dispose()
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(float(tt) for (_cc, _nc, tt, _ct, _callers) in stats.values())

    def cumulative(file: str, function: str) -> float:
        return sum(
            float(ct)
            for (path, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.items()
            if name == function and path.endswith(file)
        )

    shares = [(label, cumulative(file, name) / total) for label, file, name in PARTS]
    library, signature = shares[2][1], shares[1][1]
    rows: list[tuple[str, float, str]] = [
        ("app CPU per call, its worker threads as served", threaded_cpu, ""),
        ("app CPU per call, no thread hops (no profiler)", app_cpu, "100%"),
    ]
    for label, share in shares:
        if label.startswith("the operation"):
            share = library - signature
        rows.append((label, app_cpu * share, f"{100 * share:.0f}%"))
    rest = 1 - (library + shares[0][1] + shares[3][1] + shares[4][1])
    rows.append(
        (
            "the rest: Starlette, FastAPI routing/dependencies, middleware",
            app_cpu * rest,
            f"{100 * rest:.0f}%",
        )
    )
    return rows


def main() -> None:
    """Parse arguments, build the trial, run the library, the token check and the API."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=None,
        help="client process counts to run (default: 1 8; 1 2 with --quick)",
    )
    parser.add_argument(
        "--calls",
        type=int,
        default=1000,
        help="timed randomizations per run, split over the clients",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed randomizations per client before the start (the first logs an API client in)",
    )
    parser.add_argument(
        "--token-calls", type=int, default=300, help="token checks and round trips timed, each"
    )
    parser.add_argument(
        "--profile-calls",
        type=int,
        default=200,
        help="randomizations into the app in this process, timed and then profiled (0: none)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serve --workers N: server processes (CPU per call sums the process tree)",
    )
    parser.add_argument(
        "--no-library",
        action="store_true",
        help="skip the library in each client (step 1): the API and the server's parts only",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: 1 and 2 clients, 16 calls per run, 1 warm-up, 30 token checks",
    )
    args = parser.parse_args()
    if args.quick:
        args.calls, args.warmup, args.token_calls, args.profile_calls = 16, 1, 30, 10
    clients: list[int] = args.clients or ([1, 2] if args.quick else [1, 8])
    calls: int = args.calls
    warmup: int = args.warmup
    floor_calls = 10 if args.quick else 300
    needed = (
        2 * sum(calls + c * warmup for c in clients) + 2 * floor_calls + 3 * args.profile_calls + 10
    )
    per_stratum = needed // len(LEVELS) + 10

    with bench_place(args.db, "api", args.workdir) as place:
        print(machine(place))
        print(f"load average at start: {loadavg()}")
        users = [
            (investigator(i)[0], Role.INVESTIGATOR, investigator(i)[1]) for i in range(max(clients))
        ]
        admin = create_trial(
            place, design_toml("bench-api", per_stratum, {"type": list(LEVELS)}), users
        )
        admin.generate_list()
        admin.close()
        approve_list(place)
        print(
            f"trial: 2 strata x {per_stratum:,} slots, 1 visit; users' scrypt cost "
            f"n={BENCH_SCRYPT_N}"
        )

        results: list[tuple[str, RunResult, str, float | None]] = []
        first = 1
        for count in clients if not args.no_library else ():
            result = run_clients(place, count, first, calls, warmup)
            first += calls + count * warmup
            results.append(("library", result, loadavg(), None))

        checks = token_check(place, args.token_calls)

        database_cpu: dict[int, float | None] = {}
        serve_args = ("--workers", str(args.workers)) if args.workers > 1 else ()
        with server_process(
            place.db_url, place.key_file, place.directory / "server.log", *serve_args
        ) as server:
            for count in clients:
                cpu = tree_cpu(server.process.pid)
                db_cpu = server_cpu_seconds(place.db_url)
                result = run_clients(place, count, first, calls, warmup, server=server.url)
                server_cpu = tree_cpu(server.process.pid) - cpu
                db_after = server_cpu_seconds(place.db_url)
                database_cpu[count] = (
                    None
                    if db_cpu is None or db_after is None
                    else 1000 * (db_after - db_cpu) / result.calls
                )
                first += calls + count * warmup
                results.append(("API", result, loadavg(), 1000 * server_cpu / result.calls))
            trips = round_trips(server.url, args.token_calls)

        # before the floor, whose SQL by hand leaves the strata rows' MACs behind
        parts = asgi_profile(place, first, args.profile_calls) if args.profile_calls else []
        first += 3 * args.profile_calls + 3
        floor_rows = floor(place, first, floor_calls)

        for path, result, _load, _cpu in results:
            for refusal in sorted(set(result.refusals))[:5]:
                print(f"  refusal ({path}, {result.clients} clients): {refusal}")
        print(
            f"\nrandomize on {place.engine}: the library in each client against the "
            "API through one server process"
        )
        print(
            table(
                [
                    (
                        path,
                        r.clients,
                        r.calls,
                        r.wall,
                        r.rate,
                        percentile_ms(r.latencies, 50),
                        percentile_ms(r.latencies, 99),
                        max(r.latencies) * 1000,
                        len(r.refusals),
                        1000 * r.cpu / r.calls,
                        "-" if server_cpu is None else server_cpu,
                        load,
                    )
                    for path, r, load, server_cpu in results
                ],
                (
                    "path",
                    "clients",
                    "calls",
                    "wall s",
                    "per s",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "refused",
                    "client CPU ms/call",
                    "server CPU ms/call",
                    "load avg after",
                ),
            )
        )
        print(
            "(client CPU: the client processes' user + system time per call; server CPU: "
            "the randomizer server process's, read from /proc; a PostgreSQL server's own "
            "CPU is in neither)"
        )
        print(f"\ntoken check in this process, {args.token_calls} calls each:")
        print(table(latency_rows(checks), ("what", "mean ms", "p50 ms", "p99 ms")))
        print(
            f"\nround trips from this process, one keep-alive connection, "
            f"{args.token_calls} calls each:"
        )
        print(table(latency_rows(trips), ("request", "mean ms", "p50 ms", "p99 ms")))
        print("\nwhere one API randomization's time goes, 1 client (ms per call):")
        print(
            table(
                breakdown(results, database_cpu, floor_rows), ("part", "ms", "how it is measured")
            )
        )
        if parts:
            print(
                f"\nthe server's CPU by part: the app called in this process (no socket, "
                f"no uvicorn), {args.profile_calls} randomizations, shares from cProfile:"
            )
            print(table(parts, ("part", "ms", "share")))
        print(f"\nload average at the end: {loadavg()}")
        if any(r.refusals for _path, r, _load, _cpu in results):
            sys.exit(1)


if __name__ == "__main__":
    main()
