"""Eight investigators randomize 400 participants at once: the trial, the crowd, the checks.

:func:`prepare_trial` makes the two-stratum trial and its eight investigators;
:func:`run_workers` starts one real process per investigator (``tests/e2e/worker.py``,
in process or through a server), lets them all go at once and collects what
each printed; :func:`check_allocation` proves from the database that no slot
was lost, doubled or taken out of list order and that every participant holds
one slot and both kits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.database import execute
from tests.support.designs import AGE, design_toml, in_range, must_be_yes
from tests.support.processes import ROOT, clean_env

if TYPE_CHECKING:  # the workers import this module and need neither pytest nor click
    from tests.support.trial import Run

WORKERS = 8
PARTICIPANTS = 400
PARTICIPANT_IDS = [f"C-{n:04d}" for n in range(1, PARTICIPANTS + 1)]
"""Every participant, split over the workers round robin."""

DESIGN = design_toml(
    trial_id="concurrency",
    title="Concurrency trial",
    planned_participants=400,
    stratum_length=200,
    arms=["active", "placebo"],
    block_sizes=[2, 4],
    factors={"type": ["PPMS", "SPMS"]},
    criteria=[
        AGE,
        must_be_yes("progressive_ms", "Progressive MS?"),
        in_range("edss", "EDSS", 3.0, 6.5),
    ],
    visits=[("Day 0", 0, 0), ("Day 7", 7, 2)],
    spare_fraction=0.0,
)
"""Two strata of 200 slots, two dosing visits, no spare kits: 400 participants fill it."""

ANSWERS = {"age": "40", "progressive_ms": "yes", "edss": "4.5"}
"""Eligible answers under :data:`DESIGN`."""

INVESTIGATORS = {f"inv{i}": f"pw-inv{i}-123456" for i in range(WORKERS)}
"""One investigator per worker, name -> password."""

WorkerCommand = Callable[[str, str, Path, Sequence[str]], list[str]]
"""The argv of one worker: (user, password, go file, its participants) -> argv."""


def level_of(participant: str) -> str:
    """The participant's stratum level, from the parity of its number."""
    return "PPMS" if int(participant.rsplit("-", 1)[1]) % 2 else "SPMS"


def prepare_trial(run: Run, directory: Path) -> None:
    """The trial of :data:`DESIGN` with its list and the :data:`INVESTIGATORS`."""
    design = directory / "concurrency.toml"
    design.write_text(DESIGN, encoding="utf-8")
    run.init(design=str(design))
    for name, password in INVESTIGATORS.items():
        run.add_user(name, "investigator", password)
    run.ok("list", "generate", user="alice")
    from tests.support.trial import (  # not at import: benchmarks use this module
        approve_list,
        backdate_list,
    )

    approve_list(run)
    backdate_list(run.files)  # the workers randomize dated 7 days ago


def run_workers(
    command: WorkerCommand, directory: Path, timeout: float = 300
) -> list[dict[str, Any]]:
    """Run one worker per investigator, all released at once; every line they printed.

    Each worker gets every :data:`WORKERS`-th participant. A worker that fails
    fails the test with its stderr.
    """
    go = directory / "go"
    workers = [
        subprocess.Popen(
            command(name, password, go, PARTICIPANT_IDS[i::WORKERS]),
            cwd=ROOT,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (name, password) in enumerate(INVESTIGATORS.items())
    ]
    try:
        time.sleep(1.0)  # let every interpreter start and reach the barrier
        go.touch()
        outputs = [worker.communicate(timeout=timeout) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    return [json.loads(line) for out, _ in outputs for line in out.splitlines()]


def worker_command(*connection: str) -> WorkerCommand:
    """The argv of ``tests.e2e.worker`` reaching the trial through ``connection``
    (``local DB_URL KEY_FILE`` or ``http SERVER_URL``)."""

    def command(user: str, password: str, go: Path, participants: Sequence[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tests.e2e.worker",
            *connection,
            user,
            password,
            str(go),
            *participants,
        ]

    return command


def check_allocation(db_url: str, results: list[dict[str, Any]]) -> None:
    """No slot lost, doubled or out of list order; each participant one slot and both kits.

    ``results`` are the workers' lines: what each participant was told.
    """
    assert sorted(r["participant"] for r in results) == PARTICIPANT_IDS
    rows = execute(
        db_url,
        "SELECT p.id, p.code, p.randomization_number, s.key, sl.sequence, sl.id "
        "FROM participants p JOIN strata s ON s.id = p.stratum_id "
        "JOIN slots sl ON sl.id = p.slot_id ORDER BY p.id",
    )
    assert len(rows) == PARTICIPANTS
    assert len({r[5] for r in rows}) == PARTICIPANTS, "a slot was used twice"
    told = {r["participant"]: r["number"] for r in results}
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for _id, code, number, stratum, sequence, _slot in rows:
        by_stratum[stratum].append(sequence)
        assert number.endswith(f"-{sequence:03d}"), (code, number, sequence)
        assert told[code] == number, (code, told[code], number)
        assert stratum == f"type={level_of(code)}", (code, stratum)
    for stratum, sequences in by_stratum.items():
        # commit order is list order: no slot skipped, none out of order
        assert sequences == list(range(1, len(sequences) + 1)), stratum
    assert sorted(len(s) for s in by_stratum.values()) == [200, 200]

    kits = execute(
        db_url,
        "SELECT p.code, k.visit, k.code FROM kits k "
        "JOIN participants p ON p.id = k.participant_id "
        "WHERE k.status = 'dispensed'",
    )
    per_participant: dict[str, dict[int, str]] = defaultdict(dict)
    for participant, visit, code in kits:
        assert visit not in per_participant[participant], (participant, visit)
        per_participant[participant][visit] = code
    assert len(per_participant) == PARTICIPANTS
    for result in results:
        assert per_participant[result["participant"]] == {1: result["kit1"], 2: result["kit2"]}
    assert len({k for r in results for k in (r["kit1"], r["kit2"])}) == 2 * PARTICIPANTS
