"""Eight real processes randomize 400 participants into one trial at the same time.

Runs on SQLite by default and on PostgreSQL when RANDOMIZER_TEST_DB is set.
The same crowd through the trial server: test_server_concurrency.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.assertions import assert_ok
from tests.support.concurrency import (
    check_allocation,
    prepare_trial,
    run_workers,
    worker_command,
)
from tests.support.trial import Run


@pytest.mark.slow
def test_eight_processes_never_share_or_skip_a_slot(run: Run, tmp_path: Path) -> None:
    prepare_trial(run, tmp_path)
    results = run_workers(
        worker_command("local", run.files.db_url, str(run.files.key_file)), tmp_path
    )
    check_allocation(run.files.db_url, results)
    assert_ok(run("audit", "verify", user="alice"))
