"""Eight client processes randomize 400 participants at once through a real trial server.

The server is ``randomizer serve`` in a process of its own, holding the key
and the database; each client logs in through the API with its password
(:class:`~randomizer.backends.http.HttpBackend`) and holds neither. Runs on
SQLite by default and on PostgreSQL when RANDOMIZER_TEST_DB is set. The same
crowd in process: test_concurrency.py.
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.support.assertions import assert_ok
from tests.support.concurrency import (
    INVESTIGATORS,
    PARTICIPANTS,
    WORKERS,
    check_allocation,
    prepare_trial,
    run_workers,
    worker_command,
)
from tests.support.database import audit_rows
from tests.support.processes import server_process
from tests.support.trial import Run

ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


@pytest.mark.slow
def test_eight_clients_through_the_server_never_share_or_skip_a_slot(
    run: Run, tmp_path: Path
) -> None:
    prepare_trial(run, tmp_path)
    with server_process(run.files.db_url, run.files.key_file, tmp_path / "server.log") as server:
        results = run_workers(worker_command("http", server.url), tmp_path)
    log = server.log_text()
    # uvicorn re-raises SIGTERM after its graceful shutdown, as service managers expect
    assert server.process.returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log, log
    assert "Traceback" not in log and "internal error" not in log, log
    requests = Counter(
        (m["method"], m["path"].split("/")[3], m["status"]) for m in ACCESS_LINE.finditer(log)
    )
    # every request answered 2xx: no busy database (503), no internal error (500)
    assert {status for _method, _path, status in requests} <= {"200", "204"}, requests
    assert (
        sum(n for (method, *_), n in requests.items() if method == "POST")
        == WORKERS * 2 + PARTICIPANTS * 2
    ), requests  # login + logout, randomize + kit

    check_allocation(run.files.db_url, results)

    events = audit_rows(run.files.db_url)
    by_client = [e for e in events if e["user"] in INVESTIGATORS]
    assert all(e["details"].get("via", {}).get("channel") == "api" for e in by_client), [
        e for e in by_client if e["details"].get("via", {}).get("channel") != "api"
    ][:3]
    for name in INVESTIGATORS:
        mine = [e for e in by_client if e["user"] == name]
        actions = Counter(e["action"] for e in mine)
        share = PARTICIPANTS // WORKERS
        assert actions == {
            "auth.login": 1,
            "randomize": share,
            "kit.request": share,
            "auth.logout": 1,
        }, (name, actions)
        # one login, and every action after it under that login's token
        assert mine[0]["action"] == "auth.login" and mine[-1]["action"] == "auth.logout"
        assert len({e["details"]["via"]["session"] for e in mine}) == 1, name
    assert [e["action"] for e in events if e["user"] == "(server)"] == [
        "server.start",
        "server.stop",
    ]

    assert_ok(run("audit", "verify", user="alice"))
