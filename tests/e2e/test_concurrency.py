"""Eight real processes randomize 400 participants into one trial at the same time.

Runs on SQLite by default and on PostgreSQL when RANDOMIZER_TEST_DB is set.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support.assertions import assert_ok
from tests.support.database import execute
from tests.support.designs import AGE, design_toml, in_range, must_be_yes
from tests.support.trial import Run, backdate_list

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 8
PARTICIPANTS = 400

DESIGN = design_toml(
    trial_id="concurrency", title="Concurrency trial", planned_participants=400,
    stratum_length=200, arms=["active", "placebo"], block_sizes=[2, 4],
    factors={"type": ["PPMS", "SPMS"]},
    criteria=[AGE, must_be_yes("progressive_ms", "Progressive MS?"),
              in_range("edss", "EDSS", 3.0, 6.5)],
    visits=[("Day 0", 0, 0), ("Day 7", 7, 2)], spare_fraction=0.0)


@pytest.mark.slow
def test_eight_processes_never_share_or_skip_a_slot(run: Run, tmp_path: Path) -> None:
    design = tmp_path / "concurrency.toml"
    design.write_text(DESIGN, encoding="utf-8")
    run.init(design=str(design))
    investigators = [f"inv{i}" for i in range(WORKERS)]
    for name in investigators:
        run.ok("user", "add", name, "--role", "investigator", "--password-stdin",
               user="alice", input=f"pw-{name}-123456\n")
    run.ok("list", "generate", user="alice")
    backdate_list(run.files)  # the workers randomize dated 7 days ago

    go = tmp_path / "go"
    ids = [f"C-{n:04d}" for n in range(1, PARTICIPANTS + 1)]
    workers = [subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.worker", run.files.db_url, str(run.files.key_file),
         name, f"pw-{name}-123456", str(go), *ids[i::WORKERS]],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, name in enumerate(investigators)]
    time.sleep(1.0)  # let every interpreter start and reach the barrier
    go.touch()
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    results = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    assert sorted(r["participant"] for r in results) == ids

    rows = execute(run.files.db_url,
                   "SELECT p.id, p.code, p.randomization_number, s.key, sl.sequence, sl.id "
                   "FROM participants p JOIN strata s ON s.id = p.stratum_id "
                   "JOIN slots sl ON sl.id = p.slot_id ORDER BY p.id")
    assert len(rows) == PARTICIPANTS
    assert len({r[5] for r in rows}) == PARTICIPANTS, "a slot was used twice"
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for _id, code, number, stratum, sequence, _slot in rows:
        by_stratum[stratum].append(sequence)
        assert number.endswith(f"-{sequence:03d}"), (code, number, sequence)
    for stratum, sequences in by_stratum.items():
        # commit order is list order: no slot skipped, none out of order
        assert sequences == list(range(1, len(sequences) + 1)), stratum
    assert sorted(len(s) for s in by_stratum.values()) == [200, 200]

    kits = execute(run.files.db_url,
                   "SELECT participant_id, visit, code FROM kits "
                   "WHERE participant_id IS NOT NULL AND status = 'dispensed'")
    per_participant: dict[int, set[int]] = defaultdict(set)
    for participant_id, visit, _code in kits:
        per_participant[participant_id].add(visit)
    assert len(per_participant) == PARTICIPANTS
    assert all(v == {1, 2} for v in per_participant.values())
    printed = {(r["participant"], r["kit1"], r["kit2"]) for r in results}
    assert len({k for _p, k1, k2 in printed for k in (k1, k2)}) == 2 * PARTICIPANTS

    assert_ok(run("audit", "verify", user="alice"))
