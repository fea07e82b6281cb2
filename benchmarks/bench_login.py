"""Refused logins through the API: a known user's wrong password against an unknown user.

    python benchmarks/bench_login.py [--db URL] [--attempts 30] [--scrypt-n 32768]

A trial is created whose users' password hashes are made at ``--scrypt-n``
(default: the production cost, :data:`randomizer.access.SCRYPT_N`), then a real
``randomizer serve`` process is started on a free loopback port. Each round sends
``POST /api/v1/auth/token`` once with a known user's wrong password and once with
a user name no account has (in alternating order), timing each request from
the client. Before each request the failed-login counters of both names and of
the client are cleared directly in the database (not timed), so the throttle
never answers instead of the password check. One round of each comes first, not
counted (the connection and the server's caches warm up).

Printed: median, 10th and 90th percentile per kind, and the difference of the
medians. The server checks one password hash of the same scrypt parameters in
both cases (``randomizer.context.authenticate``), so the medians should differ
by noise only; tests/test_logins.py asserts the one check, this only shows it.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from common import (
    BenchPlace,
    add_common_arguments,
    bench_place,
    create_trial,
    design_toml,
    machine,
    percentile_ms,
    table,
)

from randomizer import access
from randomizer.access import Role
from randomizer.sessions import lift_lock
from randomizer.store import Store

KNOWN = "investigator"
KNOWN_PASSWORD = "bench-investigator-password"
UNKNOWN = "nobody-at-all"
WRONG = "not-the-password-1"
CLIENT = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(place: BenchPlace) -> Iterator[str]:
    """``randomizer serve`` for the trial in its own process; yields its base URL."""
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "randomizer",
            "--db",
            place.db_url,
            "--key-file",
            str(place.key_file),
            "serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RANDOMIZER_PASSWORD": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(10)


def refused_login(client: httpx.Client, store: Store, user: str) -> float:
    """Seconds one refused login of ``user`` takes, the throttle cleared first (untimed)."""
    with store.transaction() as session:
        lift_lock(session, user, CLIENT)
    begin = time.perf_counter()
    response = client.post("/api/v1/auth/token", json={"user": user, "password": WRONG})
    seconds = time.perf_counter() - begin
    if response.status_code != 401:
        raise RuntimeError(f"expected a 401 refusal, got {response.status_code}: {response.text}")
    return seconds


def main() -> None:
    """Create the trial, serve it, time refused logins of both kinds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--attempts", type=int, default=30, help="timed logins of each kind")
    parser.add_argument(
        "--scrypt-n",
        type=int,
        default=access.SCRYPT_N,
        help="scrypt cost of the users' hashes (default: production)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small run: 5 timed logins of each kind"
    )
    args = parser.parse_args()
    if args.quick:
        args.attempts = 5

    with bench_place(args.db, "login", args.workdir) as place:
        print(machine(place))
        admin = create_trial(
            place,
            design_toml("bench-login", 10, {}),
            [(KNOWN, Role.INVESTIGATOR, KNOWN_PASSWORD)],
            scrypt_n=args.scrypt_n,
        )
        admin.close()
        store = Store(place.db_url)
        times: dict[str, list[float]] = {KNOWN: [], UNKNOWN: []}
        try:
            with serving(place) as url, httpx.Client(base_url=url, timeout=60) as client:
                for user in (KNOWN, UNKNOWN):
                    refused_login(client, store, user)  # warm-up, not counted
                for attempt in range(args.attempts):
                    order = (KNOWN, UNKNOWN) if attempt % 2 == 0 else (UNKNOWN, KNOWN)
                    for user in order:
                        times[user].append(refused_login(client, store, user))
        finally:
            store.dispose()

    rows = [
        (
            label,
            len(times[user]),
            percentile_ms(times[user], 50),
            percentile_ms(times[user], 10),
            percentile_ms(times[user], 90),
        )
        for label, user in (("known user, wrong password", KNOWN), ("unknown user", UNKNOWN))
    ]
    print(
        f"\nrefused logins through POST /api/v1/auth/token on {place.engine}, users' "
        f"scrypt n = {args.scrypt_n}, server's n = {access.SCRYPT_N} "
        f"(load average {os.getloadavg()[0]:.1f}):"
    )
    print(table(rows, ("login", "attempts", "median ms", "p10 ms", "p90 ms")))
    difference = (statistics.median(times[UNKNOWN]) - statistics.median(times[KNOWN])) * 1000
    print(f"\nmedian(unknown) - median(known, wrong password) = {difference:+.1f} ms")


if __name__ == "__main__":
    main()
