"""``list generate`` for a large trial: time, peak memory and where the time goes.

    python benchmarks/bench_list.py [--db URL] [--participants 100000 ...]
        [--design shipped|factors] [--verify-up-to N] [--profile]
        [--profile-participants 20000] [--quick]

For each ``--participants`` (default 10,000 and 100,000; the issue also asks for
1,000,000) a trial is created with ``randomizer init`` in a fresh database and
:meth:`~randomizer.backends.local.LocalBackend.generate_list` runs once, timed whole
(login, schedule, kit codes, sealing every slot and kit, inserts, audit event,
commit). The design is

- ``shipped`` (default): ``exosome-ms`` as shipped (one stratum, 1:1, blocks of 4 and
  6, four dosing visits, 10% spare kits) with ``planned_participants`` set to the size:
  100,000 participants make 100,000 slots, 400,000 dosing kits and 40,000 spares, about
  540,000 sealed rows;
- ``factors``: 2 factors x 2 levels, 1:1, blocks of 2/4/6, one dosing visit, no spares
  (the design of the earlier measurements).

While it runs, the library functions it calls are wrapped with timers (this process
only; the library is not changed), which splits the time into: the schedule, kit codes,
sealing slots, sealing kits and the rest (building rows, the bulk inserts, reading the
slot ids back). CPU time is this process's; on a local PostgreSQL server the server's
processes' CPU time is read from /proc too. Each size runs in a child process of
its own, so each peak RSS (``VmHWM``, see ``common.max_rss_mib``) is that size's
alone. The floor of sealing, one ``AESGCM.encrypt`` per value, is measured apart.
``--profile`` adds cProfile's top functions for a smaller list.

Targets (issue 13, item 5): 100,000 participants of the shipped design in at most 8 s
and 1,000,000 in at most 80 s, each with a peak RSS under 300 MiB.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from common import (
    add_common_arguments,
    add_quick_and_verify_arguments,
    bench_place,
    child_figures,
    create_trial,
    design_toml,
    load_average,
    machine,
    max_rss_mib,
    server_cpu_seconds,
    table,
    timed,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from randomizer import trial
from randomizer.design import design_text
from randomizer.sealed import seal_kit_contents
from randomizer.vault import Vault

FACTORS = {"type": ["PPMS", "SPMS"], "edss": ["low", "high"]}
TARGETS = {100_000: 8.0, 1_000_000: 80.0}  # seconds, shipped design
TARGET_RSS_MIB = 300.0
QUICK_PARTICIPANTS = [2_000]
PHASES = (
    "generate_schedule",
    "new_code_numbers",
    "code_texts",
    "seal_allocations",
    "seal_kit_contents",
)


@contextmanager
def phase_timers() -> Iterator[dict[str, float]]:
    """Wrap the functions list generation calls with timers; yield seconds per name."""
    totals: dict[str, float] = defaultdict(float)
    inside = [False]  # within trial.generate_list

    def timer(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if name == "generate_list":
                inside[0] = True
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if inside[0]:
                    totals[name] += time.perf_counter() - start
                if name == "generate_list":
                    inside[0] = False

        return wrapper

    patches: list[tuple[Any, str, Any]] = [  # (an older library may lack some)
        (trial, name, getattr(trial, name)) for name in PHASES if hasattr(trial, name)
    ]
    patches.append((trial, "generate_list", trial.generate_list))
    for owner, name, original in patches:
        setattr(owner, name, timer(name, original))
    try:
        yield totals
    finally:
        for owner, name, original in patches:
            setattr(owner, name, original)


def shipped_design(participants: int) -> str:
    """exosome-ms as shipped, planned for ``participants``."""
    text = design_text("exosome-ms")
    planned = "planned_participants = 20"
    assert planned in text, "the shipped design changed: update this benchmark"
    return text.replace(planned, f"planned_participants = {participants}")


def design_for(kind: str, participants: int) -> str:
    """The benchmark's design text for ``participants``."""
    if kind == "shipped":
        return shipped_design(participants)
    return design_toml("bench-list", participants // 4, FACTORS, criteria=False)


def measure(
    db: str, workdir: str | None, kind: str, participants: int, verify: bool
) -> dict[str, Any]:
    """Create a trial, generate its list once; its figures (run in a child process)."""
    with bench_place(db, "list", workdir) as place:
        admin = create_trial(place, design_for(kind, participants))
        admin.trial_design()  # connect and import everything before measuring
        rss_before = max_rss_mib()
        server_before = server_cpu_seconds(place.db_url)
        cpu_before = time.process_time()
        with phase_timers() as totals:
            summary, seconds = timed(admin.generate_list)
        cpu = time.process_time() - cpu_before
        server_after = server_cpu_seconds(place.db_url)
        rss_peak = max_rss_mib()
        verified = None
        if verify:  # after the peak was read: verify_list builds ORM objects for every row
            verified, verify_seconds = timed(admin.verify_list)
            assert verified == summary, "list verify disagrees with list generate"
        admin.close()
        slots = sum(s.generated for s in summary.strata)
        return {
            "engine": place.engine,
            "version": machine(place),
            "participants": participants,
            "slots": slots,
            "kits": summary.kits,
            "spares": summary.spare_kits,
            "seconds": seconds,
            "cpu": cpu,
            "server_cpu": None
            if server_before is None or server_after is None
            else server_after - server_before,
            "rss_peak": rss_peak,
            "rss_before": rss_before,
            "phases": dict(totals),
            "verify_seconds": None if verified is None else verify_seconds,
        }


def sealing_floor(values: int = 100_000) -> tuple[float, float]:
    """Microseconds per value: bare AESGCM.encrypt, and seal_kit_contents (bulk)."""
    key = AESGCM.generate_key(bit_length=256)
    aead = AESGCM(key)
    nonces = [os.urandom(12) for _ in range(values)]
    plaintext = bytes(33)
    data = [b"randomizer/v1\0t\0kit.content\0" + f"{k:04d}-CODE".encode() for k in range(values)]
    start = time.perf_counter()
    for nonce, associated in zip(nonces, data, strict=True):
        aead.encrypt(nonce, plaintext, associated)
    bare = (time.perf_counter() - start) / values * 1e6
    vault = Vault(key, "t")
    codes = [f"{k:04d}-CODE" for k in range(values)]
    arms = ["exosome", "saline"] * (values // 2)
    start = time.perf_counter()
    seal_kit_contents(vault, codes, arms)
    bulk = (time.perf_counter() - start) / values * 1e6
    return bare, bulk


def run_child(args: argparse.Namespace, participants: int) -> dict[str, Any]:
    """``measure`` in a child process (its own peak RSS); its figures."""
    command = [
        sys.executable,
        __file__,
        "--child",
        str(participants),
        "--db",
        args.db,
        "--design",
        args.design,
    ]
    if participants <= args.verify_up_to:
        command.append("--verify")
    if args.workdir:
        command += ["--workdir", args.workdir]
    return child_figures(command, f"list generation of {participants:,}")


def main() -> None:
    """Generate lists of each size, print time, memory and the split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--participants", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--design", choices=("shipped", "factors"), default="shipped")
    parser.add_argument(
        "--profile", action="store_true", help="also profile a smaller generation under cProfile"
    )
    parser.add_argument("--profile-participants", type=int, default=20_000)
    add_quick_and_verify_arguments(parser, QUICK_PARTICIPANTS[0], "list verify")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.db, args.workdir, args.design, args.child, args.verify)))
        return
    sizes: list[int] = QUICK_PARTICIPANTS if args.quick else args.participants

    print(machine())
    print(f"load average before: {load_average()}")
    results = [run_child(args, n) for n in sizes]
    print(f"load average after: {load_average()}")
    print(results[0]["version"])
    rows = []
    for r in results:
        target = TARGETS.get(r["participants"]) if args.design == "shipped" else None
        met = (
            "-"
            if target is None
            else ("yes" if r["seconds"] <= target and r["rss_peak"] < TARGET_RSS_MIB else "NO")
        )
        server = "-" if r["server_cpu"] is None else r["server_cpu"]
        rows.append(
            (
                r["engine"],
                r["participants"],
                r["slots"],
                r["kits"],
                r["spares"],
                r["slots"] + r["kits"],
                r["seconds"],
                r["cpu"],
                server,
                (r["slots"] + r["kits"]) / r["seconds"],
                r["rss_peak"],
                r["rss_peak"] - r["rss_before"],
                "-" if target is None else f"<= {target:g} s",
                met,
            )
        )
    print(
        f"\nlist generate, {args.design} design (CPU: this process; server: the "
        "PostgreSQL server's processes):"
    )
    print(
        table(
            rows,
            (
                "engine",
                "participants",
                "slots",
                "kits",
                "spares",
                "sealed rows",
                "seconds",
                "CPU s",
                "server CPU s",
                "rows/s",
                "peak RSS MiB",
                "growth MiB",
                "target",
                "met",
            ),
        )
    )

    print("\nwhere the time goes (seconds; timers around library functions):")
    names = {
        "generate_schedule": "schedule",
        "new_code_numbers": "kit codes (draw)",
        "code_texts": "kit codes (text)",
        "seal_allocations": "seal slots",
        "seal_kit_contents": "seal kits",
    }
    split = []
    for r in results:
        phases = r["phases"]
        inside = sum(phases.get(p, 0.0) for p in PHASES)
        body = phases.get("generate_list", 0.0)
        split.append(
            (
                r["participants"],
                *(phases.get(p, 0.0) for p in PHASES),
                body - inside,
                r["seconds"] - body,
            )
        )
    print(
        table(
            split,
            (
                "participants",
                *(names[p] for p in PHASES),
                "rest: rows, inserts, id reads",
                "outside (login, commit)",
            ),
        )
    )

    for r in results:
        if r["verify_seconds"] is not None:
            print(
                f"list verify of {r['participants']:,} participants: matches "
                f"({r['verify_seconds']:.1f} s)"
            )
    bare, bulk = sealing_floor()
    print(
        f"\nsealing floor: AESGCM.encrypt alone {bare:.2f} us per value; "
        f"seal_kit_contents {bulk:.2f} us per value (nonces, padding, associated data)"
    )

    if args.profile:
        with bench_place(args.db, "list_profile", args.workdir) as place:
            admin = create_trial(place, design_for(args.design, args.profile_participants))
            admin.trial_design()
            profiler = cProfile.Profile()
            profiler.enable()
            admin.generate_list()
            profiler.disable()
            admin.close()
            print(
                f"\ncProfile of list generate for {args.profile_participants:,} "
                "participants, top functions by own time:"
            )
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
