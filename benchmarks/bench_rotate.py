"""``key rotate`` of a large trial: time and peak memory of sealing every value again.

    python benchmarks/bench_rotate.py [--db URL] [--participants 100000 ...] [--quick]

For each ``--participants`` (default 100,000) a trial of the shipped design
(``exosome-ms``: one stratum, 1:1, four dosing visits, 10% spare kits) is created with
``randomizer init`` in a fresh database and its list generated (not timed): 100,000
participants make 100,000 slots, 400,000 dosing kits and 40,000 spares, about 540,000
sealed values. Then :meth:`~randomizer.backends.local.LocalBackend.rotate_key` runs
once, timed whole (login, a new key file, a new data key, every sealed value opened and
sealed again, the trial row, the audit event, commit), in a process of its own so that
its peak RSS (``VmHWM``, see ``common.max_rss_mib``) is the rotation's alone. Afterwards
the old key file must be refused and the new one must open the trial (``list verify``
on lists of up to ``--verify-up-to`` participants).

Target (issue 13): 100,000 participants rotated in at most 15 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    ADMIN,
    PASSWORDS,
    BenchPlace,
    add_common_arguments,
    add_quick_and_verify_arguments,
    bench_place,
    child_figures,
    create_trial,
    load_average,
    machine,
    max_rss_mib,
    server_cpu_seconds,
    table,
    timed,
)

from randomizer.design import design_text
from randomizer.errors import SealedDataError

TARGETS = {100_000: 15.0}  # seconds, shipped design
QUICK_PARTICIPANTS = [2_000]


def shipped_design(participants: int) -> str:
    """exosome-ms as shipped, planned for ``participants``."""
    text = design_text("exosome-ms")
    planned = "planned_participants = 20"
    assert planned in text, "the shipped design changed: update this benchmark"
    return text.replace(planned, f"planned_participants = {participants}")


def rotate(db_url: str, key_file: Path, new_key_file: Path) -> dict[str, Any]:
    """Rotate the trial's key once (in this process, run as a child); its figures."""
    place = BenchPlace(db_url, key_file, key_file.parent, "")
    admin = place.backend(ADMIN, PASSWORDS[ADMIN])
    admin.trial_design()  # connect and import everything before measuring
    rss_before = max_rss_mib()
    server_before = server_cpu_seconds(db_url)
    cpu_before = time.process_time()
    _, seconds = timed(lambda: admin.rotate_key(new_key_file))
    cpu = time.process_time() - cpu_before
    server_after = server_cpu_seconds(db_url)
    rss_peak = max_rss_mib()
    admin.close()
    return {
        "seconds": seconds,
        "cpu": cpu,
        "server_cpu": None
        if server_before is None or server_after is None
        else server_after - server_before,
        "rss_before": rss_before,
        "rss_peak": rss_peak,
    }


def measure(db: str, workdir: str | None, participants: int, verify: bool) -> dict[str, Any]:
    """A trial with its list, rotated in a child process; the figures (run in a child)."""
    with bench_place(db, "rotate", workdir) as place:
        admin = create_trial(place, shipped_design(participants))
        summary = admin.generate_list()
        admin.close()
        new_key_file = place.directory / "rotated.key"
        command = [sys.executable, __file__, "--rotate", place.db_url, str(place.key_file)]
        result = child_figures([*command, str(new_key_file)], f"key rotate of {participants:,}")
        # the old key file opens nothing any more; the new one opens the trial
        old = place.backend(ADMIN, PASSWORDS[ADMIN])
        try:
            old.list_status()
        except SealedDataError:
            pass
        else:
            raise SystemExit("the old key file still opens the trial after the rotation")
        finally:
            old.close()
        rotated = BenchPlace(place.db_url, new_key_file, place.directory, place.engine)
        admin = rotated.backend(ADMIN, PASSWORDS[ADMIN])
        if verify:
            assert admin.verify_list().commitment == summary.commitment
        admin.audit_verify()
        admin.close()
        return {
            **result,
            "engine": place.engine,
            "version": machine(place),
            "participants": participants,
            "slots": sum(s.generated for s in summary.strata),
            "kits": summary.kits,
            "verified": verify,
        }


def run_child(args: argparse.Namespace, participants: int) -> dict[str, Any]:
    """``measure`` in a child process; its figures."""
    command = [sys.executable, __file__, "--child", str(participants), "--db", args.db]
    if participants <= args.verify_up_to:
        command.append("--verify")
    if args.workdir:
        command += ["--workdir", args.workdir]
    return child_figures(command, f"the rotation benchmark of {participants:,}")


def main() -> None:
    """Rotate the key of trials of each size; print time and memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--participants", type=int, nargs="+", default=[100_000])
    add_quick_and_verify_arguments(parser, QUICK_PARTICIPANTS[0], "list verify with the new key")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rotate", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rotate is not None:
        db_url, key_file, new_key_file = args.rotate
        print(json.dumps(rotate(db_url, Path(key_file), Path(new_key_file))))
        return
    if args.child is not None:
        print(json.dumps(measure(args.db, args.workdir, args.child, args.verify)))
        return
    sizes: list[int] = QUICK_PARTICIPANTS if args.quick else args.participants

    print(machine())
    print(f"load average before: {load_average()}")
    results = [run_child(args, n) for n in sizes]
    print(f"load average after: {load_average()}")
    print(results[0]["version"])
    rows = []
    for r in results:
        target = TARGETS.get(r["participants"])
        sealed = r["slots"] + r["kits"] + 1
        rows.append(
            (
                r["engine"],
                r["participants"],
                sealed,
                r["seconds"],
                r["cpu"],
                "-" if r["server_cpu"] is None else r["server_cpu"],
                sealed / r["seconds"],
                r["rss_peak"],
                r["rss_peak"] - r["rss_before"],
                "yes" if r["verified"] else "-",
                "-" if target is None else f"<= {target:g} s",
                "-" if target is None else ("yes" if r["seconds"] <= target else "NO"),
            )
        )
    print(
        "\nkey rotate, shipped design (sealed values: slots, kits and the seed; CPU: the "
        "rotating process; server: the PostgreSQL server's processes):"
    )
    print(
        table(
            rows,
            (
                "engine",
                "participants",
                "sealed values",
                "seconds",
                "CPU s",
                "server CPU s",
                "values/s",
                "peak RSS MiB",
                "growth MiB",
                "list verified",
                "target",
                "met",
            ),
        )
    )
    print("old key file refused after each rotation; audit trail verified with the new one")


if __name__ == "__main__":
    main()
