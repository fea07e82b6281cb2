"""The analysis files of the export (issue 12 item 7), read back as a statistician would.

Every file is read with the standard library's csv (and json) and every value
is compared with the database, read through the ORM and formatted here on its
own: the clinical randomization date apart from the entry time, one column per
eligibility answer, one row per kit, the emergency unblinding's date, user and
reason, and the ADaM subject-level variables. The dummy export has the same
files, columns and values except the arms.
"""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from randomizer.audit import utc_text
from randomizer.commands.unblinding import ANALYSIS_FILES, companion
from randomizer.models import Kit, Participant, Stratum, UnblindingReview
from randomizer.store import Store
from randomizer.unblinding.analysis import TYPES, AnalysisFiles, ParticipantFacts
from tests.support.blinded_path import FOUR_DAY0, live_kit, participant_arms
from tests.support.designs import make_design
from tests.support.exosome import DESIGN
from tests.support.trial import Run, TrialFiles

REASON = "rash, treating physician needs the product"
VOID_REASON = 'bag "B2" torn, liquid lost'

VISIT_2 = (FOUR_DAY0 + timedelta(days=84)).isoformat()


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle))


def _time(value: Any) -> str:
    return "" if value is None else utc_text(value)


@pytest.fixture
def exported(run: Run, by_arm: dict[str, str]) -> tuple[TrialFiles, Path, Path]:
    """A trial with a replaced kit, a prepared kit, a visit-2 kit and an emergency
    unblinding, exported for real (after the lock) and as a dummy (before it)."""
    files = run.files
    first, second = by_arm[DESIGN.arm_ids[0]], by_arm[DESIGN.arm_ids[1]]
    # a reason with a comma and quotes: one cell all the same
    run.ok("kit", "replace", live_kit(files, first, 1), "--reason", VOID_REASON, user="ivan")
    run.ok("pharmacy", "prepare", live_kit(files, first, 1), user="petra")
    run.ok("kit", "request", first, "--visit", "2", "--date", VISIT_2, user="ivan")
    run.ok("unblind", "emergency", second, "--reason", REASON, user="ivan")
    run.ok("unblind", "emergency", second, "--reason", "asked again", user="alice")
    dummy = files.directory / "dummy-export.csv"
    run.ok("unblind", "dummy", "--out", str(dummy), user="stan")
    run.ok("lock", "--reason", "end of study", user="alice")
    real = files.directory / "final.csv"
    run.ok("unblind", "all", "--out", str(real), user="stan")
    return files, real, dummy


def test_every_exported_value_reads_back_equal_to_the_database(
    exported: tuple[TrialFiles, Path, Path],
) -> None:
    files, out, _ = exported
    arms = participant_arms(files)
    store = Store(files.db_url)
    try:
        with store.transaction(read_only=True) as session:
            participants = {
                p.code: (p, key)
                for p, key in session.execute(
                    select(Participant, Stratum.key).join(
                        Stratum, Stratum.id == Participant.stratum_id
                    )
                )
            }
            by_id = {p.id: p.code for p, _ in participants.values()}
            reasons: dict[int, str] = {}
            for review in session.scalars(select(UnblindingReview).order_by(UnblindingReview.id)):
                reasons.setdefault(review.participant_id, review.reason)
            kits = list(session.scalars(select(Kit).where(Kit.participant_id.is_not(None))))
            codes = {kit.id: kit.code for kit in kits}
            replaced_by = {
                kit.replaces_kit_id: kit.code for kit in kits if kit.replaces_kit_id is not None
            }
            expected_participants = []
            expected_adsl = []
            for code, (p, key) in participants.items():
                arm = DESIGN.arm(arms[code])
                expected_participants.append(
                    {
                        "participant": code,
                        "site": p.site,
                        "stratum": key,
                        "randomization_number": p.randomization_number,
                        "arm": arm.id,
                        "arm_label": arm.label,
                        "randomization_date": p.randomized_on.isoformat(),
                        "entered_at": utc_text(p.randomized_at),
                        "randomized_by": p.randomized_by,
                        **{f"answer_{c.id}": p.answers.get(c.id, "") for c in DESIGN.criteria},
                        "voided": "no",
                        "voided_at": "",
                        "voided_by": "",
                        "void_reason": "",
                        "emergency_unblinded": "yes" if p.emergency_unblinded_at else "no",
                        "emergency_unblinded_at": _time(p.emergency_unblinded_at),
                        "emergency_unblinded_by": p.emergency_unblinded_by or "",
                        "emergency_unblinding_reason": reasons.get(p.id, ""),
                        "dummy": "no",
                    }
                )
                expected_adsl.append(
                    {
                        "STUDYID": DESIGN.id,
                        "USUBJID": f"{DESIGN.id}-{code}",
                        "SUBJID": code,
                        "SITEID": p.site,
                        "ARMCD": arm.id,
                        "ARM": arm.label,
                        "ACTARMCD": arm.id,
                        "ACTARM": arm.label,
                        "TRT01P": arm.label,
                        "TRT01A": arm.label,
                        "RANDDT": p.randomized_on.isoformat(),
                        "RANDFL": "Y",
                        "DUMMYFL": "N",
                    }
                )
            expected_kits = [
                {
                    "participant": by_id[kit.participant_id or 0],
                    "randomization_number": participants[by_id[kit.participant_id or 0]][
                        0
                    ].randomization_number,
                    "visit": str(kit.visit),
                    "kit": kit.code,
                    "requested_at": _time(kit.dispensed_at),
                    "dosing_date": "" if kit.visit_date is None else kit.visit_date.isoformat(),
                    "prepared_at": _time(kit.prepared_at),
                    "prepared_by": kit.prepared_by or "",
                    "status": kit.status,
                    "void_reason": kit.void_reason or "",
                    "replaced_by": replaced_by.get(kit.id, ""),
                    "dummy": "no",
                }
                for kit in kits
            ]
    finally:
        store.dispose()

    rows = _read(companion(out, "participants.csv"))

    def by_participant(row: dict[str, str]) -> str:
        return row["participant"]

    assert sorted(rows, key=by_participant) == sorted(expected_participants, key=by_participant)
    assert sorted(_read(companion(out, "adsl.csv")), key=lambda r: r["SUBJID"]) == sorted(
        expected_adsl, key=lambda r: r["SUBJID"]
    )
    kit_key = lambda row: (row["participant"], int(row["visit"]), row["kit"])  # noqa: E731
    kit_rows = _read(companion(out, "kits.csv"))
    assert sorted(kit_rows, key=kit_key) == sorted(expected_kits, key=kit_key)
    assert len(kit_rows) == len(kits) == 6  # four visit-1 kits, a replacement, a visit-2 kit
    # long form: the participant's kits in visit order, the voided one before its replacement
    assert [(r["status"], r["void_reason"]) for r in kit_rows if r["replaced_by"]] == [
        ("voided", VOID_REASON)
    ]
    assert {codes[k] for k in replaced_by} == {r["kit"] for r in kit_rows if r["replaced_by"]}

    # the clinical date, not the day the command was typed
    assert {r["randomization_date"] for r in rows} == {FOUR_DAY0.isoformat()}
    assert all(not r["entered_at"].startswith(FOUR_DAY0.isoformat()) for r in rows)
    [unblinded] = [r for r in rows if r["emergency_unblinded"] == "yes"]
    assert (unblinded["emergency_unblinded_by"], unblinded["emergency_unblinding_reason"]) == (
        "ivan",
        REASON,
    )
    assert {r["answer_age"] for r in rows} != {""}

    # the description names every column of every file, in order, with a known type
    description = json.loads(companion(out, "columns.json").read_text(encoding="utf-8"))
    assert description["dummy"] is False and description["trial"] == DESIGN.id
    assert description["arms"] == [
        {"code": a.id, "label": a.label, "description": a.description} for a in DESIGN.arms
    ]
    described = description["files"]
    assert set(described) == {"unblinding.csv", "participants.csv", "kits.csv", "adsl.csv"}
    for name, spec in described.items():
        path = out if name == "unblinding.csv" else companion(out, name)
        assert [c["name"] for c in spec["columns"]] == _header(path), name
        assert {c["type"] for c in spec["columns"]} <= set(TYPES)
        assert all(c["description"] for c in spec["columns"])


def test_the_dummy_export_has_the_same_shape(exported: tuple[TrialFiles, Path, Path]) -> None:
    _, real, dummy = exported
    assert _header(dummy) == _header(real)
    arm_columns = {"arm", "arm_label", "dummy", "ARMCD", "ARM", "ACTARMCD", "ACTARM"}
    arm_columns |= {"TRT01P", "TRT01A", "DUMMYFL"}
    for name in ANALYSIS_FILES:
        if name == "columns.json":
            continue
        fake, true = companion(dummy, name), companion(real, name)
        assert _header(fake) == _header(true), name
        fake_rows, true_rows = _read(fake), _read(true)
        # the same rows in the same order; only the arms (marked dummy) and flags differ
        assert [{k: v for k, v in r.items() if k not in arm_columns} for r in fake_rows] == [
            {k: v for k, v in r.items() if k not in arm_columns} for r in true_rows
        ], name
    fake_rows = _read(companion(dummy, "adsl.csv"))
    assert {r["DUMMYFL"] for r in fake_rows} == {"Y"}
    assert all(r["ARMCD"].startswith("dummy-") and r["ARM"].startswith("DUMMY ") for r in fake_rows)
    fake_description = json.loads(companion(dummy, "columns.json").read_text(encoding="utf-8"))
    true_description = json.loads(companion(real, "columns.json").read_text(encoding="utf-8"))
    assert fake_description["files"] == true_description["files"]
    assert fake_description["dummy"] is True
    assert [a["code"] for a in fake_description["arms"]] == [f"dummy-{a}" for a in DESIGN.arm_ids]


def test_stratum_factors_are_columns_of_their_own() -> None:
    design = make_design(
        ["a", "b"], [1, 1], [2], 8, factors={"type": ["RR", "SP"], "edss": ["low", "high"]}
    )
    marked = {"a": ("a", "Arm A"), "b": ("b", "Arm B")}
    files = AnalysisFiles(design, marked, False, {}, {}, {})
    files.add(
        [
            ParticipantFacts(
                row_id=1,
                participant="P-1",
                site="WAW",
                stratum="edss=high;type=SP",
                randomization_number="R-4-001",
                randomization_date="2020-01-05",
                entered_at="2026-11-30T10:00:00.000000Z",
                randomized_by="ivan",
                answers={},
                voided_at="",
                voided_by="",
                void_reason="",
                unblinded_at="",
                unblinded_by="",
            )
        ],
        ["b"],
    )
    written = files.finish("unblinding.csv")
    [row] = list(csv.DictReader(written["participants.csv"].decode().splitlines()))
    assert (row["stratum_type"], row["stratum_edss"], row["arm"]) == ("SP", "high", "b")
    [adsl] = list(csv.DictReader(written["adsl.csv"].decode().splitlines()))
    # STRATwR in the design's factor order
    assert (adsl["STRAT1R"], adsl["STRAT2R"], adsl["RANDDT"]) == ("SP", "high", "2020-01-05")
    columns = json.loads(written["columns.json"])["files"]["adsl.csv"]["columns"]
    assert [c["description"] for c in columns if c["name"].startswith("STRAT")] == [
        "Stratification factor type used for randomization",
        "Stratification factor edss used for randomization",
    ]
