"""The dummy unblinding: the export's shape with made-up arms, for dry runs (issue 12, item 3)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from randomizer.allocation.generator import generate_schedule
from randomizer.commands.unblinding import ANALYSIS_FILES, companion
from randomizer.unblinding import dummy
from randomizer.unblinding.dummy import dummy_arms
from tests.support.blinded_path import participant_arms, refused
from tests.support.database import audit_rows
from tests.support.designs import make_design
from tests.support.exosome import DESIGN
from tests.support.exports import analysis_text
from tests.support.trial import Run, open_trial_vault
from tests.unblinding.test_lock_export import COLUMNS, LOCK_REASON

DUMMY_ARMS = {f"dummy-{arm.id}": f"DUMMY {arm.label}" for arm in DESIGN.arms}


def _rows(path: Path) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(COLUMNS)
    return list(csv.DictReader(text.splitlines()))


@pytest.fixture
def fixed_seed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Make the OS generator of the dummy module return a known seed; yields the sizes asked."""
    asked: list[int] = []

    def token_bytes(size: int) -> bytes:
        asked.append(size)
        return bytes(range(size))

    monkeypatch.setattr(dummy, "secrets", SimpleNamespace(token_bytes=token_bytes))
    yield asked


def test_the_dummy_export(run: Run, by_arm: dict[str, str], fixed_seed: list[int]) -> None:
    files = run.files
    out = files.directory / "dummy-unblinding.csv"
    result = run.ok("unblind", "dummy", "--out", str(out), user="stan")
    data = out.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert result.stdout == (
        f"Wrote 4 participants with DUMMY arms (made up, not the trial's) "
        f"to {out}\nSHA-256: {digest}\n"
    ) + analysis_text(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = _rows(out)
    # every row says it is dummy; the arms are the design's list for a fresh OS seed
    assert fixed_seed == [32]
    made_up = dummy_arms(DESIGN, {"all": 4}, bytes(range(32)))["all"]
    assert [(r["arm"], r["arm_label"], r["dummy"]) for r in rows] == [
        (f"dummy-{arm}", DUMMY_ARMS[f"dummy-{arm}"], "yes") for arm in made_up
    ]
    event = audit_rows(files.db_url)[-1]
    assert (event["action"], event["user"], event["role"], event["subject"]) == (
        "unblind.dummy",
        "stan",
        "statistician",
        "exosome-ms",
    )
    vault = open_trial_vault(files)
    assert event["details"] == {
        "participants": 4,
        "file_mac": vault.mac(data).hex(),
        "files_mac": {
            name: vault.mac(companion(out, name).read_bytes()).hex() for name in ANALYSIS_FILES
        },
    }

    # every other column is what the real export says, after the lock
    run.ok("lock", "--reason", LOCK_REASON, user="alice")
    real_file = files.directory / "final.csv"
    run.ok("unblind", "all", "--out", str(real_file), user="stan")
    real = _rows(real_file)
    same = [c for c in COLUMNS if c not in ("arm", "arm_label", "dummy")]
    assert [[r[c] for c in same] for r in rows] == [[r[c] for c in same] for r in real]
    assert {r["dummy"] for r in real} == {"no"}
    assert {r["participant"]: r["arm"] for r in real} == participant_arms(files)

    # still allowed after the lock, and --json
    again = files.directory / "Dummy-2.csv"
    result = run.ok("unblind", "dummy", "--out", str(again), "--json", user="stan")
    assert json.loads(result.stdout) == {
        "file": str(again),
        "sha256": hashlib.sha256(again.read_bytes()).hexdigest(),
        "participants": 4,
        "dummy": True,
        "analysis_files": {
            name: {
                "file": str(companion(again, name)),
                "sha256": hashlib.sha256(companion(again, name).read_bytes()).hexdigest(),
            }
            for name in ANALYSIS_FILES
        },
    }


@pytest.mark.parametrize("name", ["unblinding.csv", "final-export.csv", "dumy.csv"])
def test_a_file_name_without_dummy_is_refused(run: Run, by_arm: dict[str, str], name: str) -> None:
    out = run.files.directory / name
    message = refused(run, "unblind", "dummy", "--out", str(out), user="stan", code=2)
    assert message == (
        f"{out}: the file name of a dummy export must contain 'dummy' (for "
        "example dummy-unblinding.csv), so that it is never taken for the "
        "real one"
    )
    assert not out.exists()
    # a folder named dummy does not make the file's own name say so
    folder = run.files.directory / "dummy"
    folder.mkdir()
    refused(
        run,
        "unblind",
        "dummy",
        "--out",
        str(folder / name),
        user="stan",
        code=2,
        fragments=("must contain 'dummy'",),
    )


@pytest.mark.parametrize(
    ("user", "role"),
    [("alice", "admin"), ("ivan", "investigator"), ("petra", "pharmacist"), ("mona", "monitor")],
)
def test_only_the_statistician_writes_a_dummy(
    run: Run, by_arm: dict[str, str], user: str, role: str
) -> None:
    out = run.files.directory / "dummy.csv"
    message = refused(
        run, "unblind", "dummy", "--out", str(out), user=user, code=1, command="unblind.dummy"
    )
    assert message == f"role {role} may not write a dummy unblinding"
    assert not out.exists()


ARM_COLUMNS = ("allocation_sealed", "content_sealed")
"""The sealed arms of slots and kits (every action reads the trial row, the sealed seed too,
but opens nothing: the patched vault shows that)."""


def test_the_dummy_never_reads_a_sealed_arm(
    run: Run, by_arm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from randomizer.vault import Vault

    def no_opening(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("the dummy export opened a sealed value")

    monkeypatch.setattr(Vault, "open", no_opening)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    # the export reads in batches straight from the driver's cursor, past the engine's
    # events: record what it hands the driver too
    from randomizer.unblinding import dummy, lock

    original = lock.driver_rows

    def recorded_rows(connection: Any, statement: Any) -> Any:
        statements.append(str(statement.compile(dialect=connection.dialect)))
        return original(connection, statement)

    monkeypatch.setattr(dummy, "driver_rows", recorded_rows)
    monkeypatch.setattr(lock, "driver_rows", recorded_rows)
    event.listen(Engine, "before_cursor_execute", record)
    try:
        run.ok("unblind", "dummy", "--out", str(run.files.directory / "dummy.csv"), user="stan")
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert any("FROM participants" in s for s in statements)  # the listener saw the export
    assert [s for s in statements if any(c in s for c in ARM_COLUMNS)] == []


# the made-up arms -----------------------------------------------------------------------------


def test_dummy_arms_are_the_designs_list_for_the_seed() -> None:
    design = make_design(["a", "b", "c"], [1, 1, 1], [3, 6], 30, factors={"site": ["x", "y"]})
    seed = bytes(32)
    arms = dummy_arms(design, {"site=x": 7, "site=y": 0}, seed)
    schedule = generate_schedule(design, seed, 7)
    assert arms == {"site=x": [s.arm for s in schedule.slots() if s.stratum == "site=x"][:7]}
    assert dummy_arms(design, {"site=x": 7}, bytes(31) + b"\1") != arms
    assert dummy_arms(design, {}, seed) == {}


def _two_sided_binomial(successes: int, trials: int) -> float:
    """Exact two-sided p-value of ``successes`` under Binomial(trials, 1/2)."""
    tail = min(successes, trials - successes)
    low = sum(math.comb(trials, k) for k in range(tail + 1))
    return min(1.0, 2 * low / (1 << trials))


def _agreement(dummy_of: Any, trials: int = 200, participants: int = 20) -> int:
    agree = 0
    for trial in range(trials):
        real_seed = hashlib.sha256(b"real" + trial.to_bytes(4, "little")).digest()
        dummy_seed = hashlib.sha256(b"dummy" + trial.to_bytes(4, "little")).digest()
        real = [s.arm for s in generate_schedule(DESIGN, real_seed).slots()][:participants]
        made_up = dummy_of(real, dummy_seed)
        assert Counter(made_up).keys() <= set(DESIGN.arm_ids)
        agree += sum(r == d for r, d in zip(real, made_up, strict=True))
    return agree


def test_dummy_arms_agree_with_the_real_ones_no_better_than_chance() -> None:
    """200 simulated trials of 20 (fixed seeds): dummy and real arms agree as coins would.

    For 1:1 every position is either arm with probability 1/2 in both lists, so
    agreement is Binomial(4000, 1/2) if the dummy is independent of the real
    arms. Positions in one block are correlated, which widens the real spread a
    little beyond the binomial's: the test errs towards rejecting, never towards
    passing a leak.
    """
    agree = _agreement(lambda real, seed: dummy_arms(DESIGN, {"all": len(real)}, seed)["all"])
    assert _two_sided_binomial(agree, 4000) > 0.001, agree
    # the test sees a leak: a dummy that copies the real arms one time in ten
    leaky = _agreement(
        lambda real, seed: (
            real if seed[0] < 26 else dummy_arms(DESIGN, {"all": len(real)}, seed)["all"]
        )
    )
    assert _two_sided_binomial(leaky, 4000) < 0.001, leaky


def test_dummy_group_sizes_vary_as_a_real_lists_do() -> None:
    sizes: Counter[int] = Counter()
    for trial in range(1000):
        seed = hashlib.sha256(trial.to_bytes(4, "little")).digest()
        arms = dummy_arms(DESIGN, {"all": 19}, seed)["all"]
        counts = Counter(arms)
        sizes[abs(counts["exosome"] - counts["saline"])] += 1
    # 19 is odd: never equal; an open block of 6 can leave 3 apart, never more
    assert set(sizes) == {1, 3} and sizes[3] > 0
