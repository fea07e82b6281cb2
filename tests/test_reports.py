"""``randomizer report``: blinded recruitment and kit status; balance by arm only when allowed."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.support.blinded_path import FOUR_DAY0, live_kit, participant_arms
from tests.support.database import audit_rows, execute
from tests.support.exosome import DESIGN, answer_args, arm_words_in
from tests.support.trial import Run, TrialFiles

BLINDED_KEYS = {
    "open_reviews",
    "reviews",
    "trial",
    "locked",
    "planned",
    "randomized",
    "screen_failures",
    "emergency_unblindings",
    "by_site",
    "by_date",
    "kits",
    "arms_shown",
    "by_site_date",
    "screen_failures_by_date",
    "kits_by_visit",
    "spares_left",
}
DAY0 = FOUR_DAY0


@pytest.fixture
def busy_trial(run: Run, by_arm: dict[str, str]) -> TrialFiles:
    """Four participants (both arms), a screen failure, a replaced and a prepared kit,
    one emergency unblinding."""
    files = run.files
    run(
        "randomize",
        "P-900",
        "--site",
        "WAW",
        *answer_args(age="80"),
        "--date",
        DAY0.isoformat(),
        user="ivan",
    )
    first = sorted(by_arm.values())[0]
    run.ok("kit", "replace", live_kit(files, first, 1), "--reason", "damaged", user="ivan")
    run.ok("pharmacy", "prepare", live_kit(files, first, 1), user="petra")
    run.ok("unblind", "emergency", first, "--reason", "rash", user="ivan")
    return files


def report(run: Run, user: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run.ok("report", "--json", user=user).stdout)
    return data


def kit_counts(files: TrialFiles) -> dict[str, int]:
    counts = Counter(status for (status,) in execute(files.db_url, "SELECT status FROM kits"))
    return {s: counts.get(s, 0) for s in ("available", "dispensed", "prepared", "voided")}


def failure_day(files: TrialFiles) -> str:
    """The UTC day the one screen failure was recorded."""
    days = [row["at"][:10] for row in audit_rows(files.db_url) if row["action"] == "screen_failure"]
    assert len(days) == 1
    return str(days[0])


def kits_by_visit(files: TrialFiles) -> dict[str, dict[str, int]]:
    """Kits per visit by bar, straight from the database."""
    bars = {"dispensed": "requested", "prepared": "prepared", "voided": "voided"}
    result = {str(v.number): dict.fromkeys(bars.values(), 0) for v in DESIGN.visits}
    for visit, status in execute(
        files.db_url, "SELECT visit, status FROM kits WHERE visit IS NOT NULL"
    ):
        if status in bars:
            result[str(visit)][bars[status]] += 1
    return result


def spares_left(files: TrialFiles) -> int:
    rows = execute(
        files.db_url,
        "SELECT count(*) FROM kits WHERE spare AND visit IS NULL AND status = 'available'",
    )
    return int(rows[0][0])


@pytest.mark.parametrize("user", ["ivan", "mona", "stan", "petra"])
def test_roles_without_arm_balance_see_recruitment_and_kits_only(
    run: Run, busy_trial: TrialFiles, user: str
) -> None:
    data = report(run, user)
    assert data == {
        "trial": "exosome-ms",
        "locked": False,
        "planned": 20,
        "randomized": 4,
        "screen_failures": 1,
        "emergency_unblindings": 1,
        "by_site": {"WAW": 4},
        "by_date": {DAY0.isoformat(): 4},
        "kits": kit_counts(busy_trial),
        "arms_shown": False,
        "by_arm": {},
        "by_block": [],
        "imbalance": None,
        "imbalance_bound": None,
        "open_reviews": 1,
        "reviews": data["reviews"],
        "by_site_date": {"WAW": {DAY0.isoformat(): 4}},
        "screen_failures_by_date": {failure_day(busy_trial): 1},
        "kits_by_visit": kits_by_visit(busy_trial),
        "spares_left": spares_left(busy_trial),
        "allocations": [],
        "arm_ratio": {},
    }
    # the reviewing role (monitor) sees the open review, with the reason and no arm
    assert [(r["unblinded_by"], r["reason"]) for r in data["reviews"]] == (
        [("ivan", "rash")] if user == "mona" else []
    )
    assert data["kits_by_visit"]["1"] == {"requested": 3, "prepared": 1, "voided": 1}
    assert data["kits"]["voided"] == 1 and data["kits"]["prepared"] == 1
    assert data["kits"]["dispensed"] == 3
    text = run.ok("report", user=user).stdout
    assert arm_words_in(text) == []
    assert "Balance" not in text and "Imbalance" not in text
    assert (
        "Trial exosome-ms: 4 of 20 planned randomized; 1 screen failures; 1 emergency "
        "unblindings" in text
    )
    event = audit_rows(busy_trial.db_url)[-1]
    assert (event["action"], event["user"], event["details"]) == (
        "report",
        user,
        {"arms_shown": False},
    )


def test_the_blinded_report_does_not_move_with_the_arms(
    run: Run, trial_with_list: TrialFiles
) -> None:
    """After each randomization, the blinded report differs only by the count and the date."""
    seen = []
    for n in range(1, 7):
        run.ok(
            "randomize",
            f"P-{n:03d}",
            "--site",
            "WAW",
            *answer_args(),
            "--date",
            DAY0.isoformat(),
            user="ivan",
        )
        data = report(run, "mona")
        seen.append(data)
        unblinded = {
            "by_arm",
            "by_block",
            "imbalance",
            "imbalance_bound",
            "allocations",
            "arm_ratio",
        }
        assert set(data) - unblinded == BLINDED_KEYS
        assert (data["by_arm"], data["by_block"], data["imbalance"]) == ({}, [], None)
        assert (data["allocations"], data["arm_ratio"]) == ([], {})
        assert data["randomized"] == n and data["by_date"] == {DAY0.isoformat(): n}
    arms = participant_arms(trial_with_list)
    assert len(set(arms.values())) == 2  # the reports above spanned both arms


def test_an_admin_sees_the_balance_by_arm_and_block(run: Run, busy_trial: TrialFiles) -> None:
    arms = participant_arms(busy_trial)
    data = report(run, "alice")
    counts = Counter(arms.values())
    expected = {a: counts.get(a, 0) for a in DESIGN.arm_ids}
    assert data["arms_shown"] is True
    assert data["by_arm"] == {"all": expected, "total": expected}
    assert data["imbalance"] == abs(expected["exosome"] - expected["saline"])
    assert data["imbalance_bound"] == DESIGN.imbalance_bound() == 3
    assert data["by_block"][0]["block"] == 1 and data["by_block"][0]["block_size"] in (4, 6)
    assert sum(sum(b["assigned"].values()) for b in data["by_block"]) == 4
    assert data["arm_ratio"] == dict(zip(DESIGN.arm_ids, DESIGN.ratio, strict=True))
    listed = data["allocations"]
    assert sorted(a["arm"] for a in listed) == sorted(arms.values())
    assert [a["sequence"] for a in listed] == sorted(a["sequence"] for a in listed)
    text = run.ok("report", user="alice").stdout
    assert "Balance by arm (unblinded view):" in text
    assert f"Imbalance now: {data['imbalance']:g} (the design allows at most 3)" in text
    assert audit_rows(busy_trial.db_url)[-1]["details"] == {"arms_shown": True}


def test_a_statistician_sees_the_balance_only_after_the_lock(
    run: Run, busy_trial: TrialFiles
) -> None:
    assert report(run, "stan")["arms_shown"] is False
    run.ok("lock", "--reason", "end of trial", user="alice")
    data = report(run, "stan")
    assert data["arms_shown"] is True and data["locked"] is True
    assert sum(data["by_arm"]["total"].values()) == 4
    # the monitor stays blinded after the lock
    assert report(run, "mona")["arms_shown"] is False
