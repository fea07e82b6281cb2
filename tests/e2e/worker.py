"""A real separate process that randomizes participants and requests their kits.

Run as ``python -m tests.e2e.worker DB_URL KEY_FILE USER PASSWORD GO_FILE PID...``:
it waits until GO_FILE exists (so all workers start together), then for each
participant id randomizes it (stratum from the id's parity) dated 7 days ago
and requests its visit-2 kit today, printing one JSON line per participant.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials

ANSWERS = {"age": "40", "progressive_ms": "yes", "edss": "4.5"}


def main(argv: list[str]) -> int:
    """Randomize the given participants as fast as the database lets us."""
    db_url, key_file, user, password, go_file, *participants = argv
    backend = LocalBackend(db_url, Path(key_file), lambda: Credentials(user, password))
    deadline = time.monotonic() + 60
    while not Path(go_file).exists():
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.005)
    today = backend.today()
    for pid in participants:
        level = "PPMS" if int(pid.rsplit("-", 1)[1]) % 2 else "SPMS"
        done = backend.randomize(pid, "WAW", {"type": level}, dict(ANSWERS),
                                 today - timedelta(days=7))
        kit = backend.request_kit(pid, 2, today)
        print(json.dumps({"participant": pid, "number": done.randomization_number,
                          "kit1": done.kit, "kit2": kit.kit}), flush=True)
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
