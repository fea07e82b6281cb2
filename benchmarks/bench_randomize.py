"""Randomizations per second and latency with 1 and 8 concurrent client processes.

    python benchmarks/bench_randomize.py [--db URL] [--clients 1 8] [--calls 1000]
        [--scrypt-n 1024] [--profile] [--floor] [--quick]

One trial (2 strata, 1 dosing visit, two eligibility criteria) is created with
``randomizer init`` and ``list generate``. For each client count, that many real
processes start, each with one :class:`~randomizer.backends.local.LocalBackend` reused for every
call, as one investigator each. Every client randomizes a few participants to warm up
(connection pool, imports), reports ready and waits; then all start together and
randomize ``--calls`` participants between them (stratum alternating). Printed per run:
throughput (calls / wall time from the first start to the last end), latency p50, p99
and maximum per call, and refusals.

Authentication is reported apart: every operation verifies the user's scrypt password
hash, and a randomization verifies it once more as its electronic signature. The users'
hashes are made at ``--scrypt-n`` (default 2**10, cheap); the cost of one
``verify_password`` at that cost and at the production cost
(:data:`randomizer.access.SCRYPT_N`) is timed separately. Run with
``--scrypt-n 32768`` to see throughput including production hashing.

``--profile`` also randomizes ``--profile-calls`` participants in this process under
cProfile and prints where one call's time goes. ``--floor`` times, in this process and
one call after another, ``LocalBackend.randomize`` against the same statements written
by hand on the raw DB-API connection (:class:`HandWritten`): wall time, the client's
CPU and, for a PostgreSQL server on this machine, the server backend's CPU per call.
The difference is what the library adds around the SQL.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from common import (
    BENCH_SCRYPT_N,
    BenchPlace,
    add_common_arguments,
    approve_list,
    bench_place,
    create_trial,
    design_toml,
    load_average,
    machine,
    percentile_ms,
    table,
    timed,
)
from sqlalchemy import JSON, Boolean, Date
from sqlalchemy.engine import make_url

from randomizer import access, audit, rows
from randomizer.access import Role, hash_password, verify_password
from randomizer.backends.http import HttpBackend
from randomizer.backends.interface import Backend
from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials
from randomizer.errors import RandomizerError
from randomizer.models import UTCDateTime
from randomizer.signatures import Signature, meaning_of
from randomizer.vault import Vault, read_key_file, unwrap_data_key

LEVELS = ("PPMS", "SPMS")
ANSWERS = {"age": "40", "consent": "yes"}
SITE = "WAW"


def investigator(index: int) -> tuple[str, str]:
    """The name and password of the ``index``-th benchmark investigator."""
    return f"inv{index}", f"investigator-{index}-password"


def randomize_one(backend: Backend, participant: int, on: date, password: str) -> None:
    """Randomize participant number ``participant`` (stratum by parity), signed with
    ``password`` (each randomization checks it once more: an electronic signature)."""
    backend.randomize(
        f"P-{participant:07d}",
        SITE,
        {"type": LEVELS[participant % 2]},
        dict(ANSWERS),
        on,
        signature=Signature(password, meaning_of("randomize")),
    )


# the client process -------------------------------------------------------------------


def client(config: dict[str, Any]) -> int:
    """One client process: warm up, say ready, wait for 'go' on stdin, randomize, report.

    With a ``server`` in ``config`` the client is an :class:`HttpBackend` logged in to
    that trial server (its first warm-up call logs in); otherwise a :class:`LocalBackend`.
    """
    user, password = str(config["user"]), str(config["password"])
    backend: Backend
    if config.get("server"):
        backend = HttpBackend(
            str(config["server"]), credentials=lambda: Credentials(user, password)
        )
    else:
        backend = LocalBackend(
            str(config["db_url"]),
            Path(str(config["key_file"])),
            lambda: Credentials(user, password),
        )
    today = audit.now_utc().astimezone().date()  # the service's local calendar
    warmup = [int(p) for p in config["warmup"]]
    timed_ids = [int(p) for p in config["participants"]]
    for participant in warmup:
        randomize_one(backend, participant, today, password)
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
            randomize_one(backend, participant, today, password)
        except RandomizerError as exc:
            refusals.append(f"{type(exc).__name__}: {exc}")
        latencies.append(time.perf_counter() - begin)
    end = time.monotonic()
    cpu = time.process_time() - cpu
    backend.close()
    print(
        json.dumps(
            {"start": start, "end": end, "latencies": latencies, "refusals": refusals, "cpu": cpu}
        ),
        flush=True,
    )
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


def run_clients(
    place: BenchPlace, clients: int, first: int, calls: int, warmup: int, server: str | None = None
) -> RunResult:
    """Start ``clients`` processes randomizing ``calls`` participants from number ``first``.

    They work in process (``LocalBackend``), or through the trial server at ``server``.
    """
    ids = list(range(first + clients * warmup, first + clients * warmup + calls))
    processes = []
    for index in range(clients):
        user, password = investigator(index)
        config = {
            "db_url": place.db_url,
            "key_file": str(place.key_file),
            "user": user,
            "password": password,
            "server": server,
            "warmup": list(range(first + index * warmup, first + (index + 1) * warmup)),
            "participants": ids[index::clients],
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--client", json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
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
    return RunResult(
        clients=clients,
        calls=len(latencies),
        wall=end - start,
        latencies=latencies,
        refusals=refusals,
        cpu=sum(float(r["cpu"]) for r in reports),
        load=os.getloadavg()[0],
    )


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
    randomize_one(backend, first, today, password)  # warm
    profiler = cProfile.Profile()
    profiler.enable()
    for participant in range(first + 1, first + 1 + calls):
        randomize_one(backend, participant, today, password)
    profiler.disable()
    backend.close()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"\nprofile: {calls} randomize calls in this process, "
        f"{total / calls * 1000:.2f} ms per call under cProfile"
    )
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for label, file_end, function in PHASES:
        cumulative = max(
            (
                v[3]
                for (path, _line, name), v in raw.items()
                if path.endswith(file_end) and name.endswith(function)
            ),
            default=0.0,
        )
        if cumulative or not label.startswith("  "):
            rows.append((label, cumulative / calls * 1000, 100 * cumulative / total))
    print(table(rows, ("phase (cumulative, overlapping)", "ms/call", "% of call")))
    print("\ntop functions by own time:")
    stats.sort_stats("tottime").print_stats(15)


def _server_cpu(pid: int | None) -> float:
    """CPU seconds a local PostgreSQL backend has used (0 when it cannot be read)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_pid(connection: Any) -> int | None:
    """The PostgreSQL backend's process id, if this is PostgreSQL on this machine."""
    if not isinstance(connection, sqlite3.Connection):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = int(cursor.fetchone()[0])
        connection.commit()
        return pid if Path(f"/proc/{pid}/stat").exists() else None
    return None


class HandWritten:
    """The statements one randomization runs, written by hand on the raw DB-API connection.

    A measuring stick, not a second implementation: the same reads, row locks,
    writes and two chained audit events as ``LocalBackend.randomize`` (schema
    revision, trial and user read, password check, key file and vault, participant
    check, stratum row lock, slot, participant insert, counter update, kit, audit head
    lock, "beyond the head" check, two events, head update, commit), with none of the
    ORM, SQL compilation or per-operation set-up around them.
    """

    def __init__(self, place: BenchPlace, user: str, password: str) -> None:
        self.place = place
        self.user = user
        self.password = password
        url = make_url(place.db_url)
        self.postgres = place.engine == "postgresql"
        if self.postgres:
            import psycopg

            self.connection: Any = psycopg.connect(
                host=url.host,
                port=url.port,
                user=url.username,
                password=url.password,
                dbname=url.database,
            )
        else:
            self.connection = sqlite3.connect(str(url.database), isolation_level=None)
            self.connection.execute("PRAGMA synchronous = FULL")
            self.connection.execute(f"PRAGMA busy_timeout = {30_000}")
        self.cursor = self.connection.cursor()
        self.server_pid = _backend_pid(self.connection)
        self.columns = {
            spec.table: ", ".join((*(f'"{c}"' for c in spec.columns), "row_mac"))
            for spec in rows.COVERED
        }
        self.trial_columns = self.columns["trial"]
        self.converters = {
            spec.table: [_converter(spec.model, c, self.postgres) for c in spec.columns]
            for spec in rows.COVERED
        }

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        self.cursor.execute(sql.replace("?", "%s") if self.postgres else sql, args)
        return list(self.cursor.fetchall()) if self.cursor.description else []

    def _begin(self, write: bool) -> None:
        if not self.postgres:
            self._q("BEGIN IMMEDIATE" if write else "BEGIN")

    def _end(self, commit: bool) -> None:
        if self.postgres:
            (self.connection.commit if commit else self.connection.rollback)()
        else:
            self._q("COMMIT" if commit else "ROLLBACK")

    def randomize(self, participant: int) -> None:
        """One randomization of participant number ``participant``."""
        code, key = f"P-{participant:07d}", f"type={LEVELS[participant % 2]}"
        lock = " FOR UPDATE" if self.postgres else ""
        now = datetime.now(UTC)
        # the signature: throttle, schema revision and password hash in one read
        self._begin(write=False)
        self._q(
            "SELECT key, failures, locked_until FROM login_failures WHERE key IN (?, ?)",
            (f"user:{self.user}", "client:"),
        )
        self._q("SELECT version_num FROM alembic_version")
        stored = self._q("SELECT password_hash, disabled FROM users WHERE name = ?", (self.user,))[
            0
        ]
        self._end(commit=False)
        assert verify_password(self.password, stored[0]) and not stored[1]
        self._begin(write=True)
        self._q("SELECT version_num FROM alembic_version")
        trial = self._q(f"SELECT {self.trial_columns}, wrapped_data_key FROM trial")[0]
        vault = Vault(
            unwrap_data_key(read_key_file(self.place.key_file), bytes(trial[-1])), trial[0]
        )
        check = self._check(vault)
        check("trial", trial[:-2], trial[-2])
        user = self._q(f"SELECT {self.columns['users']} FROM users WHERE name = ?", (self.user,))[0]
        check("users", user[:-1], user[-1])
        self._q("SELECT site FROM user_sites WHERE user_id = ? ORDER BY site", (user[0],))
        assert not self._q("SELECT id FROM participants WHERE upper(code) = ? LIMIT 1", (code,))
        stratum = self._q(
            f"SELECT {self.columns['strata']} FROM strata WHERE key = ?" + lock, (key,)
        )[0]
        check("strata", stratum[:-1], stratum[-1])
        sequence = stratum[5]
        slot = self._q(
            f"SELECT {self.columns['slots']} FROM slots WHERE stratum_id = ? AND sequence = ?",
            (stratum[0], sequence),
        )[0]
        check("slots", slot[:-1], slot[-1])
        written = []
        new = (*stratum[:5], sequence + 1)
        written.append(("strata", stratum[0], stratum[-1], rows.mac_row(vault, "strata", new)))
        self._q(
            "UPDATE strata SET next_sequence = ?, row_mac = ? WHERE id = ?",
            (sequence + 1, written[-1][3], stratum[0]),
        )
        stamp: Any = now.replace(tzinfo=None)
        day: Any = now.date()
        if not self.postgres:
            stamp, day = stamp.isoformat(" "), day.isoformat()
        number = f"R-{stratum[2]}-{sequence:03d}"
        values = (
            code,
            SITE,
            stratum[0],
            slot[0],
            number,
            day,
            stamp,
            self.user,
            json.dumps(ANSWERS),
            "randomize",
        )
        returned = self._q(
            "INSERT INTO participants (code, site, stratum_id, slot_id, randomization_number, "
            "randomized_on, randomized_at, randomized_by, answers, randomization_meaning) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            values,
        )
        participant_id = returned[0][0]
        covered = (
            participant_id,
            code,
            SITE,
            stratum[0],
            slot[0],
            number,
            now.date(),
            now,
            self.user,
            dict(ANSWERS),
            None,
            None,
            None,
            None,
            None,
            "randomize",
            None,
        )
        written.append(
            ("participants", participant_id, None, rows.mac_row(vault, "participants", covered))
        )
        self._q(
            "UPDATE participants SET row_mac = ? WHERE id = ?", (written[-1][3], participant_id)
        )
        kit = self._q(
            f"SELECT {self.columns['kits']} FROM kits "
            "WHERE slot_id = ? AND visit = 1 AND spare = ?",
            (slot[0], False),
        )[0]
        check("kits", kit[:-1], kit[-1])
        new_kit = (*kit[:5], "dispensed", participant_id, now, now.date(), *kit[9:-1])
        written.append(("kits", kit[0], kit[-1], rows.mac_row(vault, "kits", new_kit)))
        self._q(
            "UPDATE kits SET status = 'dispensed', participant_id = ?, dispensed_at = ?, "
            "visit_date = ?, row_mac = ? WHERE id = ?",
            (participant_id, stamp, day, written[-1][3], kit[0]),
        )
        record = {
            table: {
                "n": int(old is None),
                "rows": {str(row_id): mac.hex()},
                "sum": f"{(_number(mac) - _number(old)) % (1 << 256):064x}",
            }
            for table, row_id, old, mac in written
        }
        rows_text = json.dumps(record, sort_keys=True, separators=(",", ":"))
        head_seq, head_mac = self._q("SELECT seq, mac FROM audit_head WHERE id = 1" + lock)[0]
        assert self._q("SELECT min(seq) FROM audit_events WHERE seq > ?", (head_seq,))[0][0] is None
        seq, at = head_seq + 1, audit.utc_text(now)
        details = {"randomization_number": number, "kit": kit[1], "visit": 1, "site": SITE}
        stored_details = audit.details_text(details)
        body = audit.stored_body(
            seq, at, self.user, "investigator", "randomize", code, "", stored_details, rows_text
        )
        mac = audit.event_mac(vault.audit_key(), head_mac, body)
        self._q(
            'INSERT INTO audit_events (seq, at, "user", role, action, subject, reason, '
            "details, prev_mac, mac, rows) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                at,
                self.user,
                "investigator",
                "randomize",
                code,
                "",
                stored_details,
                head_mac,
                mac,
                rows_text,
            ),
        )
        self._q("UPDATE audit_head SET seq = ?, mac = ? WHERE id = 1", (seq, mac))
        self._end(commit=True)

    def _check(self, vault: Vault) -> Callable[[str, Sequence[Any], bytes], None]:
        """A row MAC check as the library's, on the values as the driver returns them."""

        def check(table: str, values: Sequence[Any], mac: bytes) -> None:
            converted = [
                convert(value) if value is not None else None
                for convert, value in zip(self.converters[table], values, strict=True)
            ]
            rows.check_row(vault, table, converted, bytes(mac))

        return check

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def _number(mac: bytes | None) -> int:
    return int.from_bytes(mac or b"", "big")


def _converter(model: Any, column: str, postgres: bool) -> Callable[[Any], Any]:
    """What the driver's value of ``model.column`` becomes as the library reads it."""
    kind = model.__table__.columns[column].type
    if isinstance(kind, UTCDateTime):
        if postgres:
            return lambda v: v.replace(tzinfo=UTC)
        return lambda v: datetime.fromisoformat(v).replace(tzinfo=UTC)
    if isinstance(kind, Boolean):
        return bool
    if isinstance(kind, Date) and not postgres:
        return date.fromisoformat
    if isinstance(kind, JSON) and not postgres:
        return json.loads
    return lambda v: v


def floor(place: BenchPlace, first: int, calls: int) -> list[tuple[str, float, float, float]]:
    """Per-call wall and CPU time: LocalBackend.randomize against the hand-written SQL.

    Prints the table and returns its rows: (how, wall ms, client CPU ms, server CPU ms).
    """
    user, password = investigator(0)
    rows = []
    backend = place.backend(user, password)
    today = backend.today()
    randomize_one(backend, first, today, password)  # warm: connection, caches
    with backend.store.engine.connect() as conn:
        pid = _backend_pid(conn.connection.driver_connection) if place.engine != "sqlite" else None
    rows.append(
        (
            "LocalBackend.randomize",
            *_per_call(
                lambda p: randomize_one(backend, p, today, password),
                range(first + 1, first + 1 + calls),
                pid,
            ),
        )
    )
    backend.close()
    by_hand = HandWritten(place, user, password)
    start = first + 1 + calls
    by_hand.randomize(start)
    rows.append(
        (
            "the same SQL by hand (raw driver)",
            *_per_call(by_hand.randomize, range(start + 1, start + 1 + calls), by_hand.server_pid),
        )
    )
    by_hand.close()
    print(f"\nfloor: {calls} randomizations in this process, one after another")
    print(table(rows, ("how", "wall ms/call", "client CPU ms/call", "server CPU ms/call")))
    print(
        "(server CPU: the PostgreSQL backend's, read from /proc when the server is local; "
        "SQLite runs inside the client)"
    )
    return rows


def _per_call(
    run: Callable[[int], None], participants: range, server_pid: int | None
) -> tuple[float, float, float]:
    cpu, server = time.process_time(), _server_cpu(server_pid)
    start = time.perf_counter()
    for participant in participants:
        run(participant)
    wall = time.perf_counter() - start
    n = len(participants)
    return (
        1000 * wall / n,
        1000 * (time.process_time() - cpu) / n,
        1000 * (_server_cpu(server_pid) - server) / n,
    )


def main() -> None:
    """Parse arguments, build the trial, run every client count, print the table."""
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        sys.exit(client(json.loads(sys.argv[2])))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[1, 8],
        help="client process counts to run (default: 1 8)",
    )
    parser.add_argument(
        "--calls",
        type=int,
        default=1000,
        help="timed randomizations per run, split over the clients",
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed randomizations per client before the start"
    )
    parser.add_argument(
        "--scrypt-n",
        type=int,
        default=BENCH_SCRYPT_N,
        help="scrypt cost of the users' stored hashes (default 2**10; "
        f"production is {access.SCRYPT_N})",
    )
    parser.add_argument(
        "--auth-repeat",
        type=int,
        default=10,
        help="verify_password timings per cost (best is reported)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile randomize in this process"
    )
    parser.add_argument("--profile-calls", type=int, default=300)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time the same SQL written by hand, in this process",
    )
    parser.add_argument("--floor-calls", type=int, default=300)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 and 2 clients, 20 calls, one password timing each: checks "
        "that the benchmark works, not how fast",
    )
    args = parser.parse_args()
    if args.quick:
        args.clients, args.calls, args.warmup, args.auth_repeat = [1, 2], 20, 1, 1
        args.profile_calls, args.floor_calls = 20, 20
    clients: list[int] = args.clients
    calls: int = args.calls
    warmup: int = args.warmup
    needed = (
        sum(calls + c * warmup for c in clients)
        + (args.profile_calls + 1) * args.profile
        + (2 * args.floor_calls + 2) * args.floor
    )
    per_stratum = needed // len(LEVELS) + 10

    with bench_place(args.db, "randomize", args.workdir) as place:
        print(machine(place))
        print(f"load average before: {load_average()}")
        users = [
            (investigator(i)[0], Role.INVESTIGATOR, investigator(i)[1]) for i in range(max(clients))
        ]
        admin = create_trial(
            place,
            design_toml("bench-randomize", per_stratum, {"type": list(LEVELS)}),
            users,
            args.scrypt_n,
        )
        _summary, seconds = timed(admin.generate_list)
        admin.close()
        approve_list(place, args.scrypt_n)
        print(
            f"trial: 2 strata x {per_stratum:,} slots, 1 visit; list generated in "
            f"{seconds:.1f} s; users' scrypt cost n={args.scrypt_n}"
        )

        production = password_cost(access.SCRYPT_N, max(3, args.auth_repeat // 3))
        cheap = password_cost(args.scrypt_n, args.auth_repeat)
        cores = os.cpu_count() or 1
        print(
            "\nauthentication (one verify_password, best of several; every operation does "
            "one, and a signed one such as randomize one more for its signature):"
        )
        print(
            table(
                [
                    (f"production n={access.SCRYPT_N}", production * 1000, cores / production),
                    (f"benchmark users n={args.scrypt_n}", cheap * 1000, cores / cheap),
                ],
                ("stored hash cost", "ms per login", f"logins/s ceiling on {cores} cores"),
            )
        )

        results = []
        first = 1
        for count in clients:
            result = run_clients(place, count, first, calls, warmup)
            first += calls + count * warmup
            results.append(result)
            for refusal in sorted(set(result.refusals))[:5]:
                print(f"  refusal ({count} clients): {refusal}")
        print(
            f"\nrandomize on {place.engine}, users' hash n={args.scrypt_n} "
            f"({cheap * 1000:.1f} ms of each call is password hashing):"
        )
        print(
            table(
                [
                    (
                        place.engine,
                        r.clients,
                        r.calls,
                        r.wall,
                        r.rate,
                        percentile_ms(r.latencies, 50),
                        percentile_ms(r.latencies, 99),
                        max(r.latencies) * 1000,
                        len(r.refusals),
                        1000 * r.cpu / r.calls,
                        r.load,
                    )
                    for r in results
                ],
                (
                    "engine",
                    "clients",
                    "calls",
                    "wall s",
                    "per s",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "refused",
                    "client CPU ms/call",
                    "load avg",
                ),
            )
        )
        print(
            "(client CPU: user + system time of the client processes per call; the "
            "database server's CPU is not included. load avg: the machine's 1-minute "
            "load when the run ended; above the core count, other work competed.)"
        )
        if args.profile:
            profile(place, first, args.profile_calls)
            first += args.profile_calls + 1
        if args.floor:
            floor(place, first, args.floor_calls)


if __name__ == "__main__":
    main()
