"""A real separate process that randomizes participants and requests their kits.

Run as ``python -m tests.e2e.worker local DB_URL KEY_FILE USER PASSWORD GO_FILE PID...``
(the library in this process) or ``python -m tests.e2e.worker http SERVER_URL USER
PASSWORD GO_FILE PID...`` (a client of the trial server, logged in with the password
for as long as it runs): it waits until GO_FILE exists (so all workers start
together), then for each participant id randomizes it (stratum from the id's
parity) dated 7 days ago and requests its visit-2 kit today, printing one JSON
line per participant.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

from randomizer import audit
from randomizer.backends.http import HttpBackend
from randomizer.backends.interface import Backend
from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials
from randomizer.signatures import Signature, meaning_of
from tests.support.concurrency import ANSWERS, level_of


def connect(argv: list[str]) -> tuple[Backend, list[str]]:
    """The backend the arguments name, and the arguments left after it."""
    mode, *rest = argv
    if mode == "local":
        db_url, key_file, user, password, *rest = rest
        return LocalBackend(db_url, Path(key_file), lambda: Credentials(user, password)), rest
    if mode == "http":
        server, user, password, *rest = rest
        return HttpBackend(server, credentials=lambda: Credentials(user, password)), rest
    raise SystemExit(f"unknown mode {mode!r}: local or http")


def main(argv: list[str]) -> int:
    """Randomize the given participants as fast as the trial lets us."""
    backend, (go_file, *participants) = connect(argv)
    # the password is the connection's, given before GO_FILE; it signs each randomization
    signature = Signature(argv[4] if argv[0] == "local" else argv[3], meaning_of("randomize"))
    deadline = time.monotonic() + 60
    while not Path(go_file).exists():
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.005)
    today = audit.now_utc().astimezone().date()  # the service's local calendar, same machine
    try:
        for pid in participants:
            done = backend.randomize(
                pid,
                "WAW",
                {"type": level_of(pid)},
                dict(ANSWERS),
                today - timedelta(days=7),
                signature=signature,
            )
            kit = backend.request_kit(pid, 2, today)
            print(
                json.dumps(
                    {
                        "participant": pid,
                        "number": done.randomization_number,
                        "kit1": done.kit,
                        "kit2": kit.kit,
                    }
                ),
                flush=True,
            )
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
