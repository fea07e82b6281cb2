"""Randomize, kit request and replace, pharmacy prepare and list, through the CLI (issue 4).

Each refusal is checked for its exit code, its one ``Error:`` line, and that
it changed nothing but (for exit 1) one audit event. Bad input of every kind
the issue names is at the end.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from randomizer.allocation import service
from randomizer.allocation.kits import ALPHABET, new_code, parse_code
from randomizer.sealed import KIT_KIND, kit_row
from tests.support.assertions import assert_error
from tests.support.blinded_path import (
    FOUR_DAY0,
    days_ago,
    live_kit,
    normalized,
    participant_arms,
    randomize,
    refused,
    stratum_size,
)
from tests.support.database import audit_rows, dump_database, execute, without_audit
from tests.support.exosome import DESIGN, answer_args
from tests.support.trial import USERS, Run, TrialFiles, open_trial_vault

DAY0 = FOUR_DAY0
"""Randomization day of the participants of these tests; visit 2 is due on day 84 +/- 7."""


def on(offset: int) -> str:
    return (DAY0 + timedelta(days=offset)).isoformat()


@pytest.fixture
def trial(run: Run, by_arm: dict[str, str]) -> TrialFiles:
    """The trial with its list and P-001..P-004 randomized on DAY0 (visit 1 kits only)."""
    return run.files


def kit_content(files: TrialFiles, code: str) -> str:
    """A kit's sealed content, opened as the key holder."""
    sealed = execute(files.db_url, "SELECT content_sealed FROM kits WHERE code = :c", c=code)
    return open_trial_vault(files).open(KIT_KIND, kit_row(code), bytes(sealed[0][0]))


def kit_status(files: TrialFiles, code: str) -> str:
    return str(execute(files.db_url, "SELECT status FROM kits WHERE code = :c", c=code)[0][0])


def typo_of(code: str) -> str:
    """The code with its first character mistyped (the check character catches it)."""
    wrong = ALPHABET[(ALPHABET.index(code[0]) + 1) % len(ALPHABET)]
    return wrong + code[1:]


# randomize ------------------------------------------------------------------------------


def test_randomize_gives_the_number_and_the_visit_1_kit(
    run: Run, trial_with_list: TrialFiles
) -> None:
    result = run.ok(
        "randomize",
        "P-001",
        "--site",
        "WAW",
        *answer_args(),
        "--date",
        DAY0.isoformat(),
        user="ivan",
    )
    kit = live_kit(trial_with_list, "P-001", 1)
    assert result.stdout == (
        f"Participant P-001 randomized at WAW: randomization number R-001.\nVisit 1 kit: {kit}\n"
    )
    data = randomize(run, "P-002", DAY0)
    assert data == {
        "participant": "P-002",
        "randomization_number": "R-002",
        "site": "WAW",
        "visit": 1,
        "kit": live_kit(trial_with_list, "P-002", 1),
    }
    assert parse_code(data["kit"]) == data["kit"]
    rows = execute(
        trial_with_list.db_url,
        "SELECT p.code, s.sequence, p.randomized_on, p.randomized_by FROM "
        "participants p JOIN slots s ON s.id = p.slot_id ORDER BY s.sequence",
    )
    assert [(c, q, str(d), by) for c, q, d, by in rows] == [
        ("P-001", 1, DAY0.isoformat(), "ivan"),
        ("P-002", 2, DAY0.isoformat(), "ivan"),
    ]
    event = [e for e in audit_rows(trial_with_list.db_url) if e["action"] == "randomize"][-1]
    assert (event["user"], event["subject"]) == ("ivan", "P-002")
    assert event["details"] == {
        "randomization_number": "R-002",
        "site": "WAW",
        "stratum": "all",
        "date": DAY0.isoformat(),
        "kit": data["kit"],
        "visit": 1,
    }


@pytest.fixture
def far_time_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[date]:
    """A local time zone whose calendar day differs from UTC's right now; yields that day."""
    saved = os.environ.get("TZ")
    # POSIX TZ strings count west as positive: LOC+12 is UTC-12, LOC-14 is UTC+14
    monkeypatch.setenv("TZ", "LOC+12" if datetime.now(UTC).hour < 12 else "LOC-14")
    time.tzset()
    local = datetime.now(UTC).astimezone().date()
    assert local != datetime.now(UTC).date()
    yield local
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def test_the_default_date_is_the_local_calendar_day_as_the_help_says(
    run: Run, trial_with_list: TrialFiles, far_time_zone: date
) -> None:
    for command in (("randomize",), ("kit", "request")):
        help_text = " ".join(run.ok(*command, "--help").stdout.split())
        assert "(default: today on this machine's local calendar)" in help_text
        assert "UTC" not in help_text
    run.ok("randomize", "P-001", "--site", "WAW", *answer_args(), user="ivan")
    rows = execute(trial_with_list.db_url, "SELECT randomized_on FROM participants")
    assert [str(day) for (day,) in rows] == [far_time_zone.isoformat()]


def test_randomize_reads_answers_from_a_file(
    run: Run, trial_with_list: TrialFiles, tmp_path: Path
) -> None:
    answers = tmp_path / "answers.toml"
    answers.write_text(
        "age = 45\nprogressive_ms = true\nedss = 4.5\n"
        "recent_relapse_or_steroids = false\nother_neuro_autoimmune = false\n"
        'infection_malignancy_systemic = "no"\n',
        encoding="utf-8",
    )
    result = run.ok(
        "randomize",
        "P-001",
        "--site",
        "WAW",
        "--answers",
        str(answers),
        "--date",
        DAY0.isoformat(),
        "--json",
        user="ivan",
    )
    assert json.loads(result.stdout)["randomization_number"] == "R-001"


def test_a_screen_failure_uses_no_slot(run: Run, trial: TrialFiles) -> None:
    randomize(run, "P-005", DAY0)
    message = refused(
        run,
        "randomize",
        "P-006",
        "--site",
        "WAW",
        *answer_args(progressive_ms="no"),
        "--date",
        DAY0.isoformat(),
        user="ivan",
        code=1,
        command="randomize",
    )
    assert message == (
        "participant P-006 is not eligible, no slot used: progressive_ms: answered no, must "
        "be yes (Confirmed primary or secondary progressive MS?)"
    )
    event = audit_rows(trial.db_url)[-1]
    assert (event["action"], event["subject"], event["details"]["refusal"]) == (
        "screen_failure",
        "P-006",
        "Ineligible",
    )
    assert event["details"]["site"] == "WAW"  # screen failures are counted per site
    assert randomize(run, "P-007", DAY0)["randomization_number"] == "R-006"
    assert execute(
        trial.db_url,
        "SELECT s.sequence FROM participants p JOIN slots s "
        "ON s.id = p.slot_id WHERE p.code = 'P-007'",
    ) == [(6,)]
    # screened again later and now eligible: randomized into the next slot
    assert randomize(run, "P-006", DAY0)["randomization_number"] == "R-007"


def test_an_ineligible_participant_is_told_every_failing_criterion(
    run: Run, trial: TrialFiles
) -> None:
    message = refused(
        run,
        "randomize",
        "P-010",
        "--site",
        "WAW",
        *answer_args(
            age="17",
            progressive_ms="no",
            edss="2.5",
            recent_relapse_or_steroids="yes",
            other_neuro_autoimmune="yes",
            infection_malignancy_systemic="yes",
        ),
        "--date",
        DAY0.isoformat(),
        user="ivan",
        code=1,
    )
    failures = message.removeprefix("participant P-010 is not eligible, no slot used: ")
    assert [part.split(":")[0] for part in failures.split("; ")] == [c.id for c in DESIGN.criteria]
    assert "age: answered 17, must be 18 to 65 (Age in years at screening)" in failures
    assert "edss: answered 2.5, must be 3 to 6.5 (EDSS score at screening)" in failures


@pytest.mark.parametrize(
    ("criterion", "value"),
    [
        ("age", "18"),
        ("age", "65"),
        ("edss", "3"),
        ("edss", "6.5"),
        ("progressive_ms", "YES"),
        ("recent_relapse_or_steroids", "No"),
    ],
)
def test_boundary_answers_are_eligible(
    run: Run, trial_with_list: TrialFiles, criterion: str, value: str
) -> None:
    randomize(run, "P-001", DAY0, **{criterion: value})


def test_randomizing_twice_names_the_existing_number(run: Run, trial: TrialFiles) -> None:
    for answers in (answer_args(), answer_args(age="99")):  # ineligible now: still "already"
        refused(
            run,
            "randomize",
            "P-001",
            "--site",
            "WAW",
            *answers,
            "--date",
            DAY0.isoformat(),
            user="ivan",
            code=1,
            command="randomize",
            fragments=("participant P-001 is already randomized as R-001",),
        )


def test_a_full_stratum_is_refused(run: Run, trial: TrialFiles) -> None:
    size = stratum_size(trial)
    assert size >= DESIGN.planned_participants
    for n in range(5, size + 1):
        assert randomize(run, f"P-{n:03d}", DAY0)["randomization_number"] == f"R-{n:03d}"
    message = refused(
        run,
        "randomize",
        "P-999",
        "--site",
        "WAW",
        *answer_args(),
        "--date",
        DAY0.isoformat(),
        user="ivan",
        code=1,
        command="randomize",
    )
    assert message == (
        f"stratum all is full: all {size} slots are used; no participant can be randomized into it"
    )


def test_randomizing_before_the_list_is_refused(run: Run, trial_with_users: TrialFiles) -> None:
    refused(
        run,
        "randomize",
        "P-001",
        "--site",
        "WAW",
        *answer_args(),
        "--date",
        DAY0.isoformat(),
        user="ivan",
        code=1,
        fragments=(
            "no allocation list yet: an admin generates the allocation list first "
            "(run 'randomizer list generate')",
        ),
    )


@pytest.mark.parametrize("participant", ["P", "7", "p-001-a", "A" * 32, "0-0"])
def test_valid_participant_ids(run: Run, trial_with_list: TrialFiles, participant: str) -> None:
    assert randomize(run, participant, DAY0)["participant"] == participant.upper()


@pytest.mark.parametrize(
    "participant", ["P 001", ".P1", "A" * 33, "P_001", "P/001", "P\n1", "P-0\u00e91"]
)
def test_invalid_participant_ids(run: Run, trial_with_list: TrialFiles, participant: str) -> None:
    refused(
        run,
        "randomize",
        participant,
        "--site",
        "WAW",
        *answer_args(),
        "--date",
        DAY0.isoformat(),
        user="ivan",
        code=2,
        fragments=("is not valid: use 1-32 letters, digits and dashes",),
    )


# kit request ----------------------------------------------------------------------------


def test_a_kit_request_returns_the_same_code_when_asked_again(run: Run, trial: TrialFiles) -> None:
    first = run.ok("kit", "request", "P-001", "--visit", "2", "--date", on(84), user="ivan")
    code = live_kit(trial, "P-001", 2)
    assert first.stdout == f"P-001 (R-001) visit 2 (Week 12) on {on(84)}: kit {code}\n"
    again = run.ok("kit", "request", "P-001", "--visit", "2", "--json", user="ivan")
    assert json.loads(again.stdout) == {
        "participant": "P-001",
        "randomization_number": "R-001",
        "visit": 2,
        "visit_name": "Week 12",
        "kit": code,
        "visit_date": on(84),
        "repeat": True,
        "note": "",
    }
    text = run.ok("kit", "request", "P-001", "--visit", "1", user="ivan")
    assert text.stdout.endswith(f"kit {live_kit(trial, 'P-001', 1)} (issued earlier)\n")
    assert kit_status(trial, code) == "dispensed"


def test_a_repeat_request_with_another_date_says_the_date_was_not_recorded(
    run: Run, trial: TrialFiles
) -> None:
    run.ok("kit", "request", "P-001", "--visit", "2", "--date", on(84), user="ivan")
    code = live_kit(trial, "P-001", 2)
    before = dump_database(trial.db_url)
    again = run.ok("kit", "request", "P-001", "--visit", "2", "--date", on(86), user="ivan")
    note = (
        f"visit 2's kit was issued earlier, dated {on(84)}: the date {on(86)} was not "
        "recorded; the kit and its recorded date are unchanged"
    )
    assert again.stdout == (
        f"P-001 (R-001) visit 2 (Week 12) on {on(84)}: kit {code} (issued earlier)\nNote: {note}.\n"
    )
    as_json = run.ok(
        "kit", "request", "P-001", "--visit", "2", "--date", on(86), "--json", user="ivan"
    )
    assert json.loads(as_json.stdout)["note"] == note
    assert without_audit(dump_database(trial.db_url)) == without_audit(before)
    recorded = execute(trial.db_url, "SELECT visit_date FROM kits WHERE code = :c", c=code)
    assert str(recorded[0][0]) == on(84)
    event = audit_rows(trial.db_url)[-1]
    assert event["details"] == {
        "visit": 2,
        "kit": code,
        "repeat": True,
        "date_not_recorded": on(86),
    }
    # the same date, or none, is no news
    for same in (("--date", on(84)), ()):
        plain = run.ok("kit", "request", "P-001", "--visit", "2", *same, user="ivan")
        assert "Note:" not in plain.stdout


def test_visits_are_requested_in_order(run: Run, trial: TrialFiles) -> None:
    for visit in ("3", "4"):
        refused(
            run,
            "kit",
            "request",
            "P-001",
            "--visit",
            visit,
            "--date",
            on(168),
            user="ivan",
            code=1,
            command="kit.request",
            fragments=(
                f"visit {visit} comes after visit {int(visit) - 1}, whose kit has "
                "not been requested for P-001: request visits in order",
            ),
        )
    run.ok("kit", "request", "P-001", "--visit", "2", "--date", on(84), user="ivan")
    refused(
        run,
        "kit",
        "request",
        "P-001",
        "--visit",
        "4",
        "--date",
        on(252),
        user="ivan",
        code=1,
        fragments=("visit 4 comes after visit 3",),
    )
    run.ok("kit", "request", "P-001", "--visit", "3", "--date", on(168), user="ivan")


@pytest.mark.parametrize(
    ("offset", "inside"), [(76, False), (77, True), (84, True), (91, True), (92, False)]
)
def test_the_visit_window_is_enforced(
    run: Run, trial: TrialFiles, offset: int, inside: bool
) -> None:
    args = ("kit", "request", "P-001", "--visit", "2", "--date", on(offset))
    if inside:
        run.ok(*args, user="ivan")
        return
    refused(
        run,
        *args,
        user="ivan",
        code=1,
        command="kit.request",
        fragments=(
            f"{on(offset)} is outside the window of visit 2 (Week 12) for P-001: {on(77)} to "
            f"{on(91)}; to dose outside the window, give an override reason "
            "(add --override-window --reason TEXT)",
        ),
    )


def test_dosing_outside_the_window_with_a_reason_is_audited(run: Run, trial: TrialFiles) -> None:
    result = run.ok(
        "kit",
        "request",
        "P-001",
        "--visit",
        "2",
        "--date",
        on(100),
        "--override-window",
        "--reason",
        "  flu, infusion postponed  ",
        "--json",
        user="ivan",
    )
    code = json.loads(result.stdout)["kit"]
    event = audit_rows(trial.db_url)[-1]
    assert (event["action"], event["user"], event["subject"]) == ("kit.request", "ivan", "P-001")
    assert event["reason"] == "flu, infusion postponed"
    assert event["details"] == {
        "visit": 2,
        "date": on(100),
        "kit": code,
        "window_override": {"from": on(77), "to": on(91)},
    }


def test_a_visit_date_must_follow_the_previous_visit(run: Run, trial: TrialFiles) -> None:
    run.ok("kit", "request", "P-001", "--visit", "2", "--date", on(90), user="ivan")
    refused(
        run,
        "kit",
        "request",
        "P-001",
        "--visit",
        "3",
        "--date",
        on(90),
        "--override-window",
        "--reason",
        "early",
        user="ivan",
        code=2,
        fragments=(f"date {on(90)} is not after visit 2 ({on(90)})",),
    )


# kit replace ----------------------------------------------------------------------------


def test_a_replaced_kit_is_voided_and_a_spare_of_the_same_content_issued(
    run: Run, trial: TrialFiles
) -> None:
    old = live_kit(trial, "P-001", 1)
    result = run.ok(
        "kit", "replace", old.lower().replace("-", ""), "--reason", "bag punctured", user="ivan"
    )
    new = live_kit(trial, "P-001", 1)
    assert new != old
    assert result.stdout == f"Kit {old} voided. P-001 visit 1: use kit {new}\n"
    assert kit_status(trial, old) == "voided"
    assert kit_status(trial, new) == "dispensed"
    assert kit_content(trial, new) == kit_content(trial, old) == participant_arms(trial)["P-001"]
    spare, replaces = execute(
        trial.db_url,
        "SELECT k.spare, o.code FROM kits k JOIN kits o "
        "ON o.id = k.replaces_kit_id WHERE k.code = :c",
        c=new,
    )[0]
    assert bool(spare) and replaces == old
    again = run.ok("kit", "request", "P-001", "--visit", "1", "--json", user="ivan")
    assert json.loads(again.stdout)["kit"] == new
    event = [e for e in audit_rows(trial.db_url) if e["action"] == "kit.replace"][-1]
    assert (event["action"], event["subject"], event["reason"]) == (
        "kit.replace",
        old,
        "bag punctured",
    )
    assert event["details"] == {"new_kit": new, "participant": "P-001", "visit": 1}
    # the replacement can be replaced in turn; the voided kit cannot
    refused(
        run,
        "kit",
        "replace",
        old,
        "--reason",
        "again",
        user="ivan",
        code=1,
        command="kit.replace",
        fragments=(f"kit {old} is already voided",),
    )
    run.ok("kit", "replace", new, "--reason", "dropped", user="ivan")
    assert kit_status(trial, new) == "voided"


def test_only_issued_kits_can_be_replaced(run: Run, trial: TrialFiles) -> None:
    for spare in (True, False):
        code = execute(
            trial.db_url,
            "SELECT code FROM kits WHERE status = 'available' AND spare = :s ORDER BY code LIMIT 1",
            s=spare,
        )[0][0]
        refused(
            run,
            "kit",
            "replace",
            code,
            "--reason",
            "lost",
            user="ivan",
            code=1,
            fragments=(
                f"kit {code} has not been issued to a participant: only issued "
                "kits can be replaced",
            ),
        )


@pytest.mark.parametrize("spread", ["one-arm", "both-arms"])
def test_spares_run_out_for_every_arm_at_once(run: Run, trial: TrialFiles, spread: str) -> None:
    """When spares run out, replacing a kit of either arm is refused, identically.

    Refusing only kits of the arm whose spares are gone would tell the
    investigator that the refused kit shares an arm with those replaced before.
    """
    arms = participant_arms(trial)  # the first 4 slots hold both arms (blocks of 4 or 6)
    first = next(p for p in sorted(arms) if arms[p] == DESIGN.arm_ids[0])
    second = next(p for p in sorted(arms) if arms[p] == DESIGN.arm_ids[1])
    per_arm = DESIGN.spares_per_arm()
    assert per_arm == 4
    order = [first] * per_arm if spread == "one-arm" else [first, second] * (per_arm // 2)
    for participant in order:
        run.ok(
            "kit", "replace", live_kit(trial, participant, 1), "--reason", "damaged", user="ivan"
        )
    messages = []
    for participant in (first, second):
        code = live_kit(trial, participant, 1)
        message = refused(
            run,
            "kit",
            "replace",
            code,
            "--reason",
            "damaged",
            user="ivan",
            code=1,
            command="kit.replace",
        )
        assert message == (
            f"no spare kit left to replace {code}: the trial's spare kits are "
            "used up, and spares cannot be added to a generated list; contact "
            "the list custodian"
        )
        messages.append(normalized(message, {code: "<kit>"}))
    assert messages[0] == messages[1]


# pharmacy -------------------------------------------------------------------------------


def test_pharmacy_prepare_shows_content_and_instructions(run: Run, trial: TrialFiles) -> None:
    code = live_kit(trial, "P-001", 1)
    arm = DESIGN.arm(participant_arms(trial)["P-001"])
    result = run.ok("pharmacy", "prepare", code, user="petra")
    assert result.stdout == (
        f"Kit {code} for P-001 (R-001), visit 1 (Week 0)\n"
        f"CONTENT: {arm.label} [{arm.id}]\n{arm.description}\n"
        f"Preparation: {arm.preparation}\n"
        "Label the infusion with the kit code only; never tell blinded staff the content.\n"
    )
    assert "final volume of 100 mL" in arm.preparation
    assert "must match" in arm.preparation
    prepared = execute(trial.db_url, "SELECT status, prepared_by FROM kits WHERE code = :c", c=code)
    assert prepared == [("prepared", "petra")]
    event = audit_rows(trial.db_url)[-1]
    assert (event["action"], event["user"], event["subject"]) == ("pharmacy.prepare", "petra", code)
    assert event["details"] == {"participant": "P-001", "visit": 1}
    refused(
        run,
        "pharmacy",
        "prepare",
        code,
        user="petra",
        code=1,
        command="pharmacy.prepare",
        fragments=(f"kit {code} was already prepared on ", " by petra: a kit is prepared once"),
    )


def test_a_voided_kit_is_refused_loudly(run: Run, trial: TrialFiles) -> None:
    old = live_kit(trial, "P-001", 1)
    run.ok("kit", "replace", old, "--reason", "cold chain broken", user="ivan")
    refused(
        run,
        "pharmacy",
        "prepare",
        old,
        user="petra",
        code=1,
        fragments=(
            f"kit {old} is VOIDED (cold chain broken): do NOT prepare it; ask the investigator "
            "for the replacement kit code",
        ),
    )
    new = live_kit(trial, "P-001", 1)
    prep = json.loads(run.ok("pharmacy", "prepare", new, "--json", user="petra").stdout)
    assert (prep["participant"], prep["visit"], prep["arm"]) == (
        "P-001",
        1,
        participant_arms(trial)["P-001"],
    )


def test_a_kit_not_issued_cannot_be_prepared(run: Run, trial: TrialFiles) -> None:
    code = execute(
        trial.db_url, "SELECT code FROM kits WHERE status = 'available' ORDER BY code LIMIT 1"
    )[0][0]
    refused(
        run,
        "pharmacy",
        "prepare",
        code,
        user="petra",
        code=1,
        fragments=(
            f"kit {code} has not been issued to a participant: prepare only kits an "
            "investigator has requested",
        ),
    )


@pytest.mark.parametrize("user", ["alice", "ivan", "stan", "mona"])
def test_a_refused_pharmacy_command_names_its_own_permission(
    run: Run, trial: TrialFiles, user: str
) -> None:
    role = USERS[user]
    assert (
        refused(run, "pharmacy", "list", user=user, code=1, command="pharmacy.list")
        == f"role {role} may not see the pharmacy's list of kit contents"
    )
    kit = live_kit(trial, "P-001", 1)
    assert (
        refused(run, "pharmacy", "prepare", kit, user=user, code=1, command="pharmacy.prepare")
        == f"role {role} may not prepare kits in the pharmacy"
    )


def test_pharmacy_list_has_every_kit_by_code(run: Run, trial: TrialFiles, tmp_path: Path) -> None:
    out = tmp_path / "kits.csv"
    listing = json.loads(
        run.ok("pharmacy", "list", "--csv", str(out), "--json", user="petra").stdout
    )
    codes = [k["kit"] for k in listing]
    assert codes == sorted(codes)
    assert len(codes) == execute(trial.db_url, "SELECT count(*) FROM kits")[0][0]
    issued = live_kit(trial, "P-001", 1)
    by_code = {k["kit"]: k for k in listing}
    assert by_code[issued]["participant"] == "P-001"
    assert by_code[issued]["status"] == "requested"
    assert by_code[issued]["requested_by"] == "ivan" and by_code[issued]["requested_at"]
    for k in listing[:12]:
        assert k["arm"] == kit_content(trial, k["kit"])
        assert k["label"] == DESIGN.arm(k["arm"]).label
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["kit"] for r in rows] == codes
    assert tuple(rows[0]) == service.KIT_CSV_COLUMNS
    row = next(r for r in rows if r["kit"] == issued)
    assert (row["status"], row["requested_by"], row["prepared_by"]) == ("requested", "ivan", "")
    assert_error(
        run("pharmacy", "list", "--csv", str(out), user="petra"),
        2,
        "already exists: refusing to overwrite it",
    )


def test_pharmacy_list_csv_dash_is_standard_output(
    run: Run, trial: TrialFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    in_file = tmp_path / "kits.csv"
    run.ok("pharmacy", "list", "--csv", str(in_file), user="petra")
    printed = run.ok("pharmacy", "list", "--csv", "-", user="petra").stdout
    assert printed == in_file.read_text(encoding="utf-8")  # the CSV alone, no table
    assert printed.startswith(",".join(service.KIT_CSV_COLUMNS) + "\n")
    assert not (tmp_path / "-").exists()
    assert [e["action"] for e in audit_rows(trial.db_url)][-2:] == ["auth.login", "pharmacy.list"]
    before = dump_database(trial.db_url)
    assert_error(
        run("pharmacy", "list", "--csv", "-", "--json", user="petra"),
        2,
        "--csv - and --json both write to standard output: choose one",
    )
    assert dump_database(trial.db_url) == before
    assert not (tmp_path / "-").exists()


# bad input: one Error line, no traceback, nothing changed --------------------------------

TOMORROW = days_ago(-2).isoformat()  # two days ahead: in the future in every time zone

BAD_INPUT: list[tuple[str, str, tuple[str, ...], int, tuple[str, ...]]] = [
    # (id, user, argv, exit code, fragments); argv may hold {kit}, {typo}, {unknown} and
    # {missing}, and "{answers}" (the eligible answers) or "{answers age=abc}" (one replaced)
    (
        "unknown-participant",
        "ivan",
        ("kit", "request", "P-999", "--visit", "2"),
        1,
        ("participant P-999 is not randomized in this trial",),
    ),
    (
        "unknown-kit-replace",
        "ivan",
        ("kit", "replace", "{unknown}", "--reason", "lost"),
        1,
        ("no kit {unknown} in this trial: check the label",),
    ),
    (
        "unknown-kit-prepare",
        "petra",
        ("pharmacy", "prepare", "{unknown}"),
        1,
        ("no kit {unknown} in this trial: check the label",),
    ),
    (
        "typo-replace",
        "ivan",
        ("kit", "replace", "{typo}", "--reason", "lost"),
        2,
        ("kit code {typo} fails its check character: probably a typo; check the label",),
    ),
    (
        "typo-prepare",
        "petra",
        ("pharmacy", "prepare", "{typo}"),
        2,
        ("kit code {typo} fails its check character: probably a typo; check the label",),
    ),
    (
        "kit-bad-character",
        "ivan",
        ("kit", "replace", "ABCU-0000", "--reason", "x"),
        2,
        ("has an invalid character 'U'",),
    ),
    (
        "kit-wrong-length",
        "petra",
        ("pharmacy", "prepare", "ABC-1234"),
        2,
        ("has 7 characters, not 8: expected XXXX-XXXX",),
    ),
    ("kit-empty", "petra", ("pharmacy", "prepare", " - "), 2, ("is empty",)),
    (
        "visit-0",
        "ivan",
        ("kit", "request", "P-001", "--visit", "0"),
        2,
        ("Invalid value for '--visit': 0 is not in the range x>=1",),
    ),
    (
        "visit-5",
        "ivan",
        ("kit", "request", "P-001", "--visit", "5"),
        2,
        ("visit 5 does not exist; visits are 1 to 4",),
    ),
    (
        "visit-not-a-number",
        "ivan",
        ("kit", "request", "P-001", "--visit", "two"),
        2,
        ("Invalid value for '--visit'",),
    ),
    (
        "kit-date-not-a-date",
        "ivan",
        ("kit", "request", "P-001", "--visit", "2", "--date", "2025-02-30"),
        2,
        ("Invalid value for '--date'",),
    ),
    (
        "kit-date-words",
        "ivan",
        ("kit", "request", "P-001", "--visit", "2", "--date", "today"),
        2,
        ("Invalid value for '--date'",),
    ),
    (
        "kit-date-future",
        "ivan",
        ("kit", "request", "P-001", "--visit", "2", "--date", TOMORROW),
        2,
        (f"date {TOMORROW} is in the future",),
    ),
    (
        "override-without-reason",
        "ivan",
        ("kit", "request", "P-001", "--visit", "2", "--override-window"),
        2,
        ("--override-window needs --reason TEXT",),
    ),
    (
        "reason-without-override",
        "ivan",
        ("kit", "request", "P-001", "--visit", "2", "--reason", "x"),
        2,
        ("--reason is only used with --override-window",),
    ),
    (
        "kit-request-bad-id",
        "ivan",
        ("kit", "request", "P/1", "--visit", "2"),
        2,
        ("participant id 'P/1' is not valid",),
    ),
    (
        "replace-empty-reason",
        "ivan",
        ("kit", "replace", "{kit}", "--reason", " "),
        2,
        ("--reason must not be empty",),
    ),
    (
        "randomize-date-not-a-date",
        "ivan",
        ("randomize", "P-010", "--site", "WAW", "{answers}", "--date", "01/02/2025"),
        2,
        ("Invalid value for '--date'",),
    ),
    (
        "randomize-date-future",
        "ivan",
        ("randomize", "P-010", "--site", "WAW", "{answers}", "--date", TOMORROW),
        2,
        (f"date {TOMORROW} is in the future",),
    ),
    (
        "age-abc",
        "ivan",
        ("randomize", "P-010", "--site", "WAW", "{answers age=abc}"),
        2,
        ("answer age='abc' must be a number",),
    ),
    (
        "edss-nan",
        "ivan",
        ("randomize", "P-010", "--site", "WAW", "{answers edss=nan}"),
        2,
        ("answer edss='nan' must be a finite number",),
    ),
    (
        "yes-no-maybe",
        "ivan",
        ("randomize", "P-010", "--site", "WAW", "{answers progressive_ms=maybe}"),
        2,
        ("answer progressive_ms='maybe' must be yes or no",),
    ),
    (
        "unknown-criterion",
        "ivan",
        ("randomize", "P-010", "--site", "WAW", "{answers}", "--answer", "smoker=no"),
        2,
        ("unknown eligibility criterion 'smoker'",),
    ),
    (
        "missing-answer",
        "ivan",
        ("randomize", "P-010", "--site", "WAW", "--answer", "age=40"),
        2,
        ("missing answer for ",),
    ),
    (
        "answer-without-equals",
        "ivan",
        ("randomize", "P-010", "--site", "WAW", "--answer", "age"),
        2,
        ("--answer 'age' must look like NAME=VALUE",),
    ),
    (
        "unknown-site",
        "ivan",
        ("randomize", "P-010", "--site", "KRK", "{answers}"),
        2,
        ("site 'KRK' is not a site of this trial: use one of WAW",),
    ),
    (
        "unknown-stratum-factor",
        "ivan",
        ("randomize", "P-010", "--site", "WAW", "{answers}", "--stratum", "sex=F"),
        2,
        ("unknown stratification factor 'sex'",),
    ),
    (
        "missing-answers-file",
        "ivan",
        ("randomize", "P-010", "--site", "WAW", "--answers", "{missing}"),
        2,
        ("cannot read answers file",),
    ),
    (
        "emergency-unknown-participant",
        "ivan",
        ("unblind", "emergency", "P-999", "--reason", "rash"),
        1,
        ("participant P-999 is not randomized in this trial",),
    ),
    (
        "emergency-bad-id",
        "ivan",
        ("unblind", "emergency", "P 1", "--reason", "rash"),
        2,
        ("participant id 'P 1' is not valid",),
    ),
]


@pytest.mark.parametrize(
    ("user", "argv", "code", "fragments"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_changes_nothing(
    run: Run,
    trial: TrialFiles,
    tmp_path: Path,
    user: str,
    argv: tuple[str, ...],
    code: int,
    fragments: tuple[str, ...],
) -> None:
    kit = live_kit(trial, "P-001", 1)
    unknown = new_code()
    while execute(trial.db_url, "SELECT 1 FROM kits WHERE code = :c", c=unknown):
        unknown = new_code()
    names = {
        "{kit}": kit,
        "{typo}": typo_of(kit),
        "{unknown}": unknown,
        "{missing}": str(tmp_path / "missing.toml"),
    }
    args: list[str] = []
    for arg in argv:
        if arg.startswith("{answers"):
            overrides = dict(pair.split("=") for pair in arg.strip("{}").split()[1:])
            args += answer_args(**overrides)
        else:
            args.append(normalized(arg, names))
    assert parse_code(unknown) == unknown
    refused(
        run, *args, user=user, code=code, fragments=tuple(normalized(f, names) for f in fragments)
    )


def test_bad_answers_are_refused_before_anything_else(run: Run, trial: TrialFiles) -> None:
    """A malformed answer is exit 2 even for a participant already randomized."""
    message = refused(
        run, "randomize", "P-001", "--site", "WAW", *answer_args(age="abc"), user="ivan", code=2
    )
    assert message == "answer age='abc' must be a number"


def test_every_kit_is_parsed_forgivingly(run: Run, trial: TrialFiles) -> None:
    code = live_kit(trial, "P-001", 1)
    typed = code.lower().replace("0", "o").replace("1", "l").replace("-", " ")
    result = run.ok("pharmacy", "prepare", typed, "--json", user="petra")
    assert json.loads(result.stdout)["kit"] == code


def test_date_defaults_to_today(run: Run, trial_with_list: TrialFiles) -> None:
    run.ok("randomize", "P-001", "--site", "WAW", *answer_args(), user="ivan")
    randomized_on = execute(trial_with_list.db_url, "SELECT randomized_on FROM participants")
    assert str(randomized_on[0][0]) == days_ago(0).isoformat()
