"""How long does the command line take to start? Prints numbers; asserts nothing.

    python benchmarks/bench_startup.py [--repeat 15] [--quick]

Each command runs as a fresh process, ``--repeat`` times, interleaved so that a change
in the machine's load hits them alike; the table gives the best and median wall time:

- ``sqlite-utils --help`` (the yardstick of issue 13 item 1; from the ``bench`` extra,
  skipped with a note when it is not installed);
- ``randomizer --help`` and ``randomizer --version`` (target: within 1.5x of it);
- ``randomizer --server URL report``, a remote command against a real trial server
  (``randomizer serve`` on SQLite, started here) with a saved login token, and the same
  request (``GET /api/v1/report``) alone from this process over a fresh connection:
  the command less its request is the client's own start-up (target: within 2x of
  ``sqlite-utils --help``);
- ``python -c pass`` (the interpreter alone: the floor of every command).

It also prints the heavy packages each randomizer command imported (``-X importtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_randomize import investigator
from common import (
    bench_place,
    create_trial,
    design_toml,
    load_average,
    machine,
    table,
)

from randomizer.access import Role
from tests.support.processes import server_process

HEAVY = ("sqlalchemy", "alembic", "numpy", "fastapi", "cryptography", "httpx")
"""Packages whose import time is reported per command."""


def wall(command: list[str], env: dict[str, str]) -> float:
    """The wall time of one run of ``command`` (which must succeed), in seconds."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode()[-500:]}")
    return seconds


def heavy_imports(command: list[str], env: dict[str, str]) -> str:
    """The heavy packages a ``randomizer`` command imported, with cumulative import ms.

    ``command`` is the console script and its arguments; it runs as ``python -m``.
    """
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "randomizer", *command[1:]],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    seen: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not line.startswith("import time:"):
            continue
        name = parts[2].strip()
        if name in HEAVY:
            seen[name] = int(parts[1]) / 1000
    return ", ".join(f"{n} {ms:.0f} ms" for n, ms in sorted(seen.items())) or "none of them"


def main() -> None:
    """Time the commands, interleaved, and print the ratios to sqlite-utils --help."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs of each command")
    parser.add_argument(
        "--quick", action="store_true", help="1 run each, no warm-up: does it work?"
    )
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    bin_dir = Path(sys.executable).parent
    randomizer = [sys.executable, "-m", "randomizer"]
    if (bin_dir / "randomizer").exists():
        randomizer = [str(bin_dir / "randomizer")]  # the console script, as a user runs it
    sqlite_utils = shutil.which("sqlite-utils", path=str(bin_dir)) or shutil.which("sqlite-utils")

    print(machine())
    print(f"load average before: {load_average()}")
    state = Path(tempfile.mkdtemp(prefix="bench_startup_state_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANDOMIZER_")}
    env["XDG_STATE_HOME"] = str(state)
    try:
        with bench_place("sqlite", "startup") as place:
            user, password = investigator(0)
            admin = create_trial(
                place,
                design_toml("bench-startup", 20, {"type": ["PPMS", "SPMS"]}),
                [(user, Role.INVESTIGATOR, password)],
            )
            admin.generate_list()
            admin.close()
            log = place.directory / "server.log"
            with server_process(place.db_url, place.key_file, log) as server:
                login = [*randomizer, "--server", server.url, "--user", user, "login"]
                done = subprocess.run(
                    login,
                    capture_output=True,
                    env={**env, "RANDOMIZER_PASSWORD": password},
                    check=False,
                )
                if done.returncode != 0:
                    raise SystemExit(f"login failed: {done.stderr.decode()}")
                commands: dict[str, list[str]] = {
                    "python -c pass": [sys.executable, "-c", "pass"],
                    "randomizer --help": [*randomizer, "--help"],
                    "randomizer --version": [*randomizer, "--version"],
                    "randomizer --server URL report": [
                        *randomizer,
                        "--server",
                        server.url,
                        "report",
                    ],
                }
                if sqlite_utils:
                    commands["sqlite-utils --help"] = [sqlite_utils, "--help"]
                else:
                    print("note: sqlite-utils is not installed (pip install -e '.[bench]')")
                saved = json.loads(next(state.rglob("*.token")).read_text(encoding="utf-8"))
                token = str(saved["token"])

                def request() -> float:
                    start = time.perf_counter()
                    with httpx.Client(base_url=server.url) as client:
                        client.get(
                            "/api/v1/report", headers={"Authorization": f"Bearer {token}"}
                        ).raise_for_status()
                    return time.perf_counter() - start

                times: dict[str, list[float]] = {name: [] for name in commands}
                times["GET /api/v1/report alone"] = []
                for command in [] if args.quick else commands.values():
                    wall(command, env)  # warm the file cache
                for _ in range(repeat):
                    for name, command in commands.items():
                        times[name].append(wall(command, env))
                    times["GET /api/v1/report alone"].append(request())
                imports = {
                    name: heavy_imports(command, env)
                    for name, command in commands.items()
                    if name.startswith("randomizer")
                }
    finally:
        shutil.rmtree(state, ignore_errors=True)

    print(f"load average after: {load_average()}")
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    yardstick = median.get("sqlite-utils --help")
    rows = []
    for name in times:
        ratio: str | float = "-"
        if yardstick and name.startswith("randomizer"):
            own = median[name]
            if "--server" in name:
                own -= median["GET /api/v1/report alone"]
            ratio = own / yardstick
        rows.append((name, len(times[name]), best[name], median[name], ratio))
    print(f"\nstart-up, each command {repeat} times as a fresh process (seconds):")
    print(table(rows, ("command", "runs", "best s", "median s", "x sqlite-utils --help")))
    print(
        "(ratio: the median over sqlite-utils --help's median; for the remote command, "
        "its median less the request's; targets: --help and --version <= 1.5x, "
        "the remote command <= 2x)"
    )
    print("\nheavy packages imported (cumulative import time, one run with -X importtime):")
    for name, text in imports.items():
        print(f"  {name}: {text}")
    if yardstick:
        met = (
            median["randomizer --help"] <= 1.5 * yardstick
            and median["randomizer --version"] <= 1.5 * yardstick
        )
        remote = (
            median["randomizer --server URL report"] - median["GET /api/v1/report alone"]
        ) <= 2 * yardstick
        print(f"\n--help and --version within 1.5x: {'yes' if met else 'NO'}")
        print(f"remote command within 2x plus its request: {'yes' if remote else 'NO'}")


if __name__ == "__main__":
    main()
