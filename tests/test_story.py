"""The first trial's whole story through the CLI, once per module (issue 4).

init, one user per role, list generation, one screen failure and 20 eligible
participants randomized weekly, all 80 infusions requested and prepared over
a realistic calendar, one kit replaced, one emergency unblinding, lock, the
statistician's export, and the audit trail verified against a signed
checkpoint; each step's refusals are tried where they happen.

The story is played once by the module-scoped ``story`` fixture (about
200 commands in-process); the tests below read what it recorded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from randomizer.allocation.generator import generate_schedule
from randomizer.allocation.stream import parse_seed
from randomizer.reports import imbalance
from randomizer.sealed import SEED_KIND, open_allocation
from randomizer.signatures import MEANINGS
from tests.support.assertions import assert_error, assert_ok, without_cli_hint
from tests.support.blinded_path import days_ago, participant_arms
from tests.support.database import audit_rows, execute
from tests.support.exosome import DESIGN, TRIAL_ID, answer_args, arm_words_in
from tests.support.exports import analysis_text
from tests.support.trial import (
    ADMIN,
    USERS,
    Run,
    TrialFiles,
    backdate_list,
    open_trial_vault,
    scratch_trial,
)

PARTICIPANTS = 20
REPLACED = (5, 2)  # participant 5's week-12 kit arrives damaged
UNBLINDED = (11, 3)  # participant 11 has a serious reaction after the week-24 infusion
OFF_WINDOW = (7, 3)  # participant 7's week-24 infusion falls 10 days late
EMERGENCY_REASON = "suspected anaphylaxis; treating physician needs to know the product"
EXPORT_COLUMNS = [
    "participant",
    "site",
    "stratum",
    "randomization_number",
    "arm",
    "arm_label",
    "randomized_at",
    "kits",
    "emergency_unblinded",
    "randomized_by",
    "status",
    "voided_at",
    "voided_by",
    "void_reason",
    "randomization_signature_meaning",
    "void_signature_meaning",
    "dummy",
]


def pid(n: int) -> str:
    return f"P-{n:03d}"


@dataclass
class Step:
    """One command of the story: who ran it, its arguments and what came back."""

    user: str | None
    args: tuple[str, ...]
    result: Result
    locked: bool


@dataclass
class Story:
    """What the story recorded."""

    files: TrialFiles
    run: Run
    start: date
    steps: list[Step] = field(default_factory=list)
    randomized: dict[str, dict[str, Any]] = field(default_factory=dict)
    day0: dict[str, date] = field(default_factory=dict)
    kits: dict[tuple[str, int], str] = field(default_factory=dict)
    prepared: dict[str, dict[str, Any]] = field(default_factory=dict)
    refusals: dict[str, Result] = field(default_factory=dict)
    replaced: tuple[str, str] = ("", "")
    replacement_repeat: dict[str, Any] = field(default_factory=dict)
    emergency: Result | None = None
    export: Path | None = None
    export_result: Result | None = None
    early_export: Path | None = None
    lock_result: Result | None = None
    locked: bool = False
    final_report: dict[str, Any] = field(default_factory=dict)
    verified: Result | None = None

    def cmd(self, user: str | None, *args: str, expect: int = 0) -> Result:
        """Run one command; a step expected to succeed must succeed."""
        result = self.run(*args, user=user)
        self.steps.append(Step(user, args, result, self.locked))
        if expect == 0:
            assert_ok(result)
        return result

    def refuse(self, name: str, user: str, *args: str) -> Result:
        """Run a command that must be refused; the test checks code and message."""
        result = self.cmd(user, *args, expect=1)
        assert result.exit_code != 0, f"{name}: not refused: {result.stdout!r}"
        self.refusals[name] = result
        return result


def _calendar(start: date) -> list[tuple[date, int, int]]:
    """(date, participant, visit): weekly randomization, infusions at weeks 0/12/24/36."""
    steps = []
    for n in range(1, PARTICIPANTS + 1):
        day0 = start + timedelta(days=7 * (n - 1) + n % 3)
        for visit, offset in ((1, 0), (2, 84), (3, 168), (4, 252)):
            drift = 0 if visit == 1 else (n + visit) % 5 - 2  # inside the +/-7 day window
            if (n, visit) == OFF_WINDOW:
                drift = 10
            steps.append((day0 + timedelta(days=offset + drift), n, visit))
    return sorted(steps)


def _play(story: Story) -> None:
    run = story.run
    run.init()
    for name, role in USERS.items():
        if name != ADMIN:
            run.add_user(name, role)
    story.cmd(ADMIN, "list", "generate")
    story.cmd("stan", "list", "approve")  # go-live: a second person, not the generator
    backdate_list(story.files)  # the story begins 420 days ago

    # Screening: a candidate failing three criteria is refused and uses no slot.
    story.refuse(
        "screen failure",
        "ivan",
        "randomize",
        "P-000",
        "--site",
        "WAW",
        *answer_args(age="70", edss="7.0", recent_relapse_or_steroids="yes"),
        "--date",
        story.start.isoformat(),
    )

    for when, n, visit in _calendar(story.start):
        participant = pid(n)
        if visit == 1:
            out = story.cmd(
                "ivan",
                "randomize",
                participant,
                "--site",
                "WAW",
                *answer_args(),
                "--date",
                when.isoformat(),
                "--json",
            )
            story.randomized[participant] = json.loads(out.stdout)
            story.day0[participant] = when
            kit = story.randomized[participant]["kit"]
            if n == 2:
                story.refuse(
                    "randomize twice",
                    "ivan",
                    "randomize",
                    participant,
                    "--site",
                    "WAW",
                    *answer_args(),
                    "--date",
                    when.isoformat(),
                )
            if n == 3:
                story.refuse(
                    "visits out of order",
                    "ivan",
                    "kit",
                    "request",
                    participant,
                    "--visit",
                    "3",
                    "--date",
                    when.isoformat(),
                )
        else:
            request: tuple[str, ...] = (
                "kit",
                "request",
                participant,
                "--visit",
                str(visit),
                "--date",
                when.isoformat(),
                "--json",
            )
            if (n, visit) == OFF_WINDOW:
                story.refuse("outside window", "ivan", *request)
                request = (
                    *request,
                    "--override-window",
                    "--reason",
                    "participant in hospital for an unrelated fracture",
                )
            kit = json.loads(story.cmd("ivan", *request).stdout)["kit"]
        story.kits[(participant, visit)] = kit

        if (n, visit) == REPLACED:
            out = story.cmd(
                "ivan",
                "kit",
                "replace",
                kit,
                "--reason",
                "infusion bag damaged in transit",
                "--json",
            )
            new = json.loads(out.stdout)["kit"]
            story.replaced = (kit, new)
            story.refuse("prepare voided kit", "petra", "pharmacy", "prepare", kit)
            again = story.cmd(
                "ivan",
                "kit",
                "request",
                participant,
                "--visit",
                str(visit),
                "--date",
                when.isoformat(),
                "--json",
            )
            story.replacement_repeat = json.loads(again.stdout)
            kit = new
            story.kits[(participant, visit)] = kit

        prep = story.cmd("petra", "pharmacy", "prepare", kit, "--json")
        story.prepared[kit] = json.loads(prep.stdout)
        if (n, visit) == (1, 1):
            story.refuse("prepare twice", "petra", "pharmacy", "prepare", kit)

        if (n, visit) == UNBLINDED:
            story.refuse(
                "empty emergency reason",
                "ivan",
                "unblind",
                "emergency",
                participant,
                "--reason",
                "",
            )
            story.refuse(
                "whitespace emergency reason",
                "ivan",
                "unblind",
                "emergency",
                participant,
                "--reason",
                "  \t ",
            )
            story.emergency = story.cmd(
                "ivan", "unblind", "emergency", participant, "--reason", EMERGENCY_REASON, "--json"
            )

    story.cmd("mona", "report")
    story.cmd("mona", "report", "--json")
    story.cmd("stan", "report", "--json")
    story.cmd("ivan", "report")
    story.cmd("mona", "audit", "show", "--json")
    story.cmd("mona", "audit", "verify")
    story.refuse("list verify before lock", "stan", "list", "verify")
    story.early_export = story.files.directory / "too-early.csv"
    story.refuse(
        "unblind all before lock", "stan", "unblind", "all", "--out", str(story.early_export)
    )

    story.lock_result = story.cmd(
        ADMIN, "lock", "--reason", "last participant completed week 48; data cleaned"
    )
    story.locked = True
    story.refuse(
        "randomize after lock",
        "ivan",
        "randomize",
        pid(21),
        "--site",
        "WAW",
        *answer_args(),
        "--date",
        days_ago(1).isoformat(),
    )
    story.refuse(
        "replace after lock",
        "ivan",
        "kit",
        "replace",
        story.kits[(pid(1), 4)],
        "--reason",
        "dropped",
    )
    story.refuse("prepare after lock", "petra", "pharmacy", "prepare", story.kits[(pid(2), 4)])

    story.export = story.files.directory / "final-unblinding.csv"
    story.export_result = story.cmd("stan", "unblind", "all", "--out", str(story.export))
    story.cmd("stan", "list", "verify")
    story.final_report = json.loads(story.cmd(ADMIN, "report", "--json").stdout)
    signing = story.files.directory / "qa-signing.pem"
    story.cmd(ADMIN, "audit", "keygen", "--out", str(signing))
    note = story.files.directory / "checkpoint.note"
    note.write_text(
        story.cmd(ADMIN, "audit", "checkpoint", "--signing-key", str(signing)).stdout,
        encoding="utf-8",
    )
    story.verified = story.cmd(
        "mona", "audit", "verify", "--checkpoint", str(note), "--public-key", f"{signing}.pub"
    )


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """The whole story, played once for this module."""
    directory = tmp_path_factory.mktemp("story")
    with scratch_trial(directory) as run:
        played = Story(files=run.files, run=run, start=days_ago(420))
        _play(played)
        yield played


def _export_rows(story: Story) -> list[dict[str, str]]:
    assert story.export is not None
    with story.export.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _events(story: Story) -> list[dict[str, Any]]:
    return audit_rows(story.files.db_url)


# the end-to-end test ----------------------------------------------------------------


def test_the_whole_story(story: Story) -> None:
    """Every participant randomized in order, every infusion prepared once, all exported."""
    assert [
        story.randomized[pid(n)]["randomization_number"] for n in range(1, PARTICIPANTS + 1)
    ] == [f"R-{n:03d}" for n in range(1, PARTICIPANTS + 1)]
    for n in range(1, PARTICIPANTS + 1):
        assert story.randomized[pid(n)] == {
            "participant": pid(n),
            "randomization_number": f"R-{n:03d}",
            "site": "WAW",
            "visit": 1,
            "kit": story.kits[(pid(n), 1)],
        }
    # 80 infusions, each kit prepared once, for the right participant and visit
    assert len(story.kits) == 80 and len(set(story.kits.values())) == 80
    assert set(story.prepared) == set(story.kits.values())
    for (participant, visit), code in story.kits.items():
        prep = story.prepared[code]
        assert (prep["participant"], prep["visit"]) == (participant, visit)
        assert prep["randomization_number"] == story.randomized[participant]["randomization_number"]
        assert prep["arm"] in DESIGN.arm_ids
        assert prep["instructions"] == DESIGN.arm(prep["arm"]).preparation
        assert "100 mL" in prep["instructions"]
    statuses = Counter(row[0] for row in execute(story.files.db_url, "SELECT status FROM kits"))
    assert statuses["prepared"] == 80 and statuses["voided"] == 1
    assert statuses["dispensed"] == 0

    # the lock
    assert story.lock_result is not None
    assert re.search(
        r"^Trial exosome-ms locked at \S+Z by alice with 20 participants\.",
        story.lock_result.stdout,
    )

    # the export: one row per participant, the columns of the issue, its digest printed
    assert story.export is not None and story.export_result is not None
    data = story.export.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert story.export_result.stdout == (
        f"Wrote 20 participants to {story.export}\nSHA-256: {digest}\n"
    ) + analysis_text(story.export)
    assert stat.S_IMODE(story.export.stat().st_mode) == 0o600
    header = next(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert header == EXPORT_COLUMNS
    rows = _export_rows(story)
    assert [r["participant"] for r in rows] == [pid(n) for n in range(1, PARTICIPANTS + 1)]
    randomized_at = dict(
        execute(story.files.db_url, "SELECT code, randomized_at FROM participants")
    )
    old, new = story.replaced
    for row in rows:
        participant = row["participant"]
        assert row["site"] == "WAW" and row["stratum"] == "all"
        assert row["randomization_number"] == story.randomized[participant]["randomization_number"]
        assert row["arm_label"] == DESIGN.arm(row["arm"]).label
        assert row["randomized_at"].endswith("Z")
        assert row["randomized_at"][:19] == str(randomized_at[participant])[:19].replace(" ", "T")
        expected_kits = [f"{v}:{story.kits[(participant, v)]}" for v in range(1, 5)]
        if participant == pid(REPLACED[0]):
            expected_kits.insert(REPLACED[1] - 1, f"{REPLACED[1]}:{old}(voided)")
            assert f"{REPLACED[1]}:{new}" in expected_kits
        assert row["kits"] == " ".join(expected_kits)
        # every kit a participant received holds that participant's arm
        assert {story.prepared[story.kits[(participant, v)]]["arm"] for v in range(1, 5)} == {
            row["arm"]
        }
        assert row["emergency_unblinded"] == ("yes" if participant == pid(UNBLINDED[0]) else "no")

    # the trail verifies, anchored by a signed checkpoint
    assert story.verified is not None
    assert re.fullmatch(
        r"Audit trail verified: \d+ events, head [0-9a-f]{16}\.\.\.; signed "
        r"checkpoint at event \d+ holds\n",
        story.verified.stdout,
    )
    unblind_all = [e for e in _events(story) if e["action"] == "unblind.all"]
    assert len(unblind_all) == 1
    assert unblind_all[0]["user"] == "stan"
    mac = open_trial_vault(story.files).mac(data).hex()
    details = unblind_all[0]["details"]
    signature = details.pop("signature")
    assert (details["participants"], details["file_mac"]) == (20, mac)
    # the final unblinding is signed: printed name, time, meaning
    assert (signature["name"], signature["meaning"]) == ("stan", MEANINGS["unblind.all"])
    assert signature["at"] <= unblind_all[0]["at"]


REFUSALS: dict[str, tuple[int, str, tuple[str, ...]]] = {
    # name: (exit code, command recorded in the refusal event, message fragments)
    "screen failure": (
        1,
        "randomize",
        (
            "participant P-000 is not eligible, no slot used: ",
            "age: answered 70, must be 18 to 65",
            "edss: answered 7.0, must be 3 to 6.5",
            "recent_relapse_or_steroids: answered yes, must be no",
        ),
    ),
    "randomize twice": (1, "randomize", ("participant P-002 is already randomized as R-002",)),
    "visits out of order": (
        1,
        "kit.request",
        (
            "visit 3 comes after visit 2, whose kit has not been requested for P-003: request "
            "visits in order",
        ),
    ),
    "outside window": (
        1,
        "kit.request",
        (
            "is outside the window of visit 3 (Week 24) for P-007",
            "; to dose outside the window, give an override reason "
            "(add --override-window --reason TEXT)",
        ),
    ),
    "prepare voided kit": (
        1,
        "pharmacy.prepare",
        (
            "is VOIDED (infusion bag damaged in transit): do NOT prepare it; ask the investigator "
            "for the replacement kit code",
        ),
    ),
    "prepare twice": (
        1,
        "pharmacy.prepare",
        ("was already prepared on", "by petra: a kit is prepared once"),
    ),
    "empty emergency reason": (2, "unblind.emergency", ("--reason must not be empty",)),
    "whitespace emergency reason": (2, "unblind.emergency", ("--reason must not be empty",)),
    "list verify before lock": (
        1,
        "list.verify",
        ("role statistician may verify the allocation list only after the database lock",),
    ),
    "unblind all before lock": (
        1,
        "unblind.all",
        ("role statistician may unblind the whole trial only after the database lock",),
    ),
    "randomize after lock": (1, "randomize", ("the database is locked: no more randomization",)),
    "replace after lock": (1, "kit.replace", ("the database is locked: no more dispensing",)),
    "prepare after lock": (1, "pharmacy.prepare", ("the database is locked: no more dispensing",)),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_each_refusal_of_the_story(story: Story, name: str) -> None:
    """Exit code and message of each refusal; exit-1 refusals are audited, exit 2 is not."""
    code, command, fragments = REFUSALS[name]
    message = assert_error(story.refusals[name], code, *fragments)
    assert story.refusals[name].stdout == ""
    recorded = [
        e
        for e in _events(story)
        if e["details"].get("message") == without_cli_hint(message)
        and e["details"]["command"] == command
    ]
    if code == 1:
        assert len(recorded) == 1, recorded
        kind = "screen_failure" if name == "screen failure" else "refused"
        assert recorded[0]["action"] == kind
    else:
        assert recorded == []


def test_screen_failure_is_audited_and_uses_no_slot(story: Story) -> None:
    events = [e for e in _events(story) if e["action"] == "screen_failure"]
    assert len(events) == 1
    event = events[0]
    assert (event["user"], event["role"], event["subject"]) == ("ivan", "investigator", "P-000")
    assert event["details"]["command"] == "randomize"
    assert "edss: answered 7.0, must be 3 to 6.5" in event["details"]["message"]
    # the passing criteria are not named as failures
    message = story.refusals["screen failure"].stderr
    for passing in ("progressive_ms", "other_neuro_autoimmune", "infection_malignancy"):
        assert passing not in message
    # P-000 holds nothing; the next eligible participant took the first slot
    assert execute(story.files.db_url, "SELECT 1 FROM participants WHERE code = 'P-000'") == []
    first = execute(
        story.files.db_url,
        "SELECT p.randomization_number, s.sequence FROM participants p "
        "JOIN slots s ON s.id = p.slot_id WHERE p.code = 'P-001'",
    )
    assert first == [("R-001", 1)]


def test_randomization_follows_the_sealed_list_exactly(story: Story) -> None:
    """Participant k took slot k; each arm is the slot's sealed arm and the seed's list."""
    files = story.files
    vault = open_trial_vault(files)
    seed_sealed = execute(files.db_url, "SELECT seed_sealed FROM trial")[0][0]
    seed = parse_seed(vault.open(SEED_KIND, TRIAL_ID, bytes(seed_sealed)))
    schedule = generate_schedule(DESIGN, seed).stratum("all")
    regenerated = [slot.arm for slot in schedule.slots()]

    rows = execute(
        files.db_url,
        "SELECT p.code, s.sequence, s.allocation_sealed FROM participants p "
        "JOIN slots s ON s.id = p.slot_id ORDER BY p.randomized_at, p.id",
    )
    assert [(code, sequence) for code, sequence, _ in rows] == [
        (pid(n), n) for n in range(1, PARTICIPANTS + 1)
    ]
    sealed_arms = [
        open_allocation(vault, "all", sequence, bytes(sealed))[0] for _, sequence, sealed in rows
    ]
    assert sealed_arms == regenerated[:PARTICIPANTS]

    exported = {row["participant"]: row["arm"] for row in _export_rows(story)}
    assert [exported[pid(n)] for n in range(1, PARTICIPANTS + 1)] == regenerated[:PARTICIPANTS]
    assert participant_arms(files) == exported


def test_the_story_ends_within_the_imbalance_bound(story: Story) -> None:
    bound = DESIGN.imbalance_bound()
    assert bound == 3
    arms = [row["arm"] for row in _export_rows(story)]
    for k in range(1, len(arms) + 1):
        spread = imbalance(Counter(arms[:k]), DESIGN.ratio, DESIGN.arm_ids)
        assert spread <= bound, (k, arms[:k])
    report = story.final_report
    assert report["arms_shown"] is True and report["locked"] is True
    totals = report["by_arm"]["total"]
    assert totals == {a: arms.count(a) for a in DESIGN.arm_ids}
    assert report["imbalance"] == abs(totals["exosome"] - totals["saline"])
    assert report["imbalance"] <= bound
    assert report["imbalance_bound"] == bound
    assert sum(b["block_size"] for b in report["by_block"]) >= PARTICIPANTS
    assert (report["randomized"], report["screen_failures"], report["emergency_unblindings"]) == (
        20,
        1,
        1,
    )


def test_replacement_kit_has_the_same_content(story: Story) -> None:
    old, new = story.replaced
    assert old and new and old != new
    assert story.replacement_repeat == {
        "participant": pid(REPLACED[0]),
        "randomization_number": f"R-{REPLACED[0]:03d}",
        "visit": REPLACED[1],
        "visit_name": "Week 12",
        "kit": new,
        "visit_date": story.replacement_repeat["visit_date"],
        "repeat": True,
        "note": "",
    }
    # the pharmacy list (unblinded) shows the voided kit's content: the same as the spare's
    listing = json.loads(story.run.ok("pharmacy", "list", "--json", user="petra").stdout)
    by_code = {k["kit"]: k for k in listing}
    assert by_code[old]["status"] == "voided"
    assert by_code[new]["spare"] is True and by_code[new]["status"] == "prepared"
    assert by_code[new]["arm"] == by_code[old]["arm"] == story.prepared[new]["arm"]
    arm_of_participant = {r["participant"]: r["arm"] for r in _export_rows(story)}
    assert story.prepared[new]["arm"] == arm_of_participant[pid(REPLACED[0])]
    replace = [e for e in _events(story) if e["action"] == "kit.replace"]
    assert len(replace) == 1
    assert (replace[0]["subject"], replace[0]["reason"]) == (old, "infusion bag damaged in transit")
    assert replace[0]["details"] == {
        "new_kit": new,
        "participant": pid(REPLACED[0]),
        "visit": REPLACED[1],
    }


def test_window_override_is_audited(story: Story) -> None:
    participant, visit = pid(OFF_WINDOW[0]), OFF_WINDOW[1]
    target = story.day0[participant] + timedelta(days=168)
    events = [
        e
        for e in _events(story)
        if e["action"] == "kit.request"
        and e["subject"] == participant
        and e["details"].get("visit") == visit
    ]
    assert len(events) == 1
    event = events[0]
    assert event["reason"] == "participant in hospital for an unrelated fracture"
    assert event["details"]["window_override"] == {
        "from": (target - timedelta(days=7)).isoformat(),
        "to": (target + timedelta(days=7)).isoformat(),
    }
    assert event["details"]["date"] == (target + timedelta(days=10)).isoformat()
    message = story.refusals["outside window"].stderr
    assert (
        f"{(target - timedelta(days=7)).isoformat()} to "
        f"{(target + timedelta(days=7)).isoformat()}" in message
    )
    # in-window visits carry no override
    others = [
        e
        for e in _events(story)
        if e["action"] == "kit.request" and "window_override" in e["details"]
    ]
    assert others == [event]


def test_emergency_unblinding_reveals_that_participant_only(story: Story) -> None:
    assert story.emergency is not None
    participant = pid(UNBLINDED[0])
    arm = {r["participant"]: r["arm"] for r in _export_rows(story)}[participant]
    other = next(a for a in DESIGN.arm_ids if a != arm)
    revealed = json.loads(story.emergency.stdout)
    assert revealed["participant"] == participant
    assert (revealed["arm"], revealed["label"]) == (arm, DESIGN.arm(arm).label)
    assert revealed["randomization_number"] == f"R-{UNBLINDED[0]:03d}"
    assert set(revealed) == {"participant", "arm", "label", "randomization_number", "unblinded_at"}
    low = story.emergency.stdout.lower()
    assert arm in low and DESIGN.arm(arm).label.lower() in low
    for word in (
        other,
        DESIGN.arm(other).label.lower(),
        *(("placebo",) if other == "saline" else ()),
    ):
        assert word not in low
    # nothing about any other participant
    assert re.findall(r"P-\d{3}", story.emergency.stdout) == [participant]
    assert re.findall(r"R-\d{3}", story.emergency.stdout) == [f"R-{UNBLINDED[0]:03d}"]
    events = [e for e in _events(story) if e["action"] == "unblind.emergency"]
    assert len(events) == 1
    assert (events[0]["user"], events[0]["role"], events[0]["subject"], events[0]["reason"]) == (
        "ivan",
        "investigator",
        participant,
        EMERGENCY_REASON,
    )
    assert arm_words_in(json.dumps(events[0])) == []
    marked = execute(
        story.files.db_url,
        "SELECT code, emergency_unblinded_by FROM "
        "participants WHERE emergency_unblinded_at IS NOT NULL",
    )
    assert marked == [(participant, "ivan")]


def test_blinded_roles_never_saw_an_arm_during_the_story(story: Story) -> None:
    """Every output to the investigator, the monitor and the statistician before lock."""
    checked = 0
    for step in story.steps:
        if (
            step.user == "ivan"
            and step.args[:2] == ("unblind", "emergency")
            and step.result.exit_code == 0
        ):
            continue  # the one output that must name an arm (tested above)
        blinded = step.user in ("ivan", "mona") or (step.user == "stan" and not step.locked)
        if not blinded:
            continue
        checked += 1
        for stream in (step.result.stdout, step.result.stderr):
            assert arm_words_in(stream) == [], (step.user, step.args, stream)
    assert checked >= 90


def test_the_trail_records_who_did_what(story: Story) -> None:
    events = _events(story)
    actions = Counter(e["action"] for e in events)
    assert actions["randomize"] == 20
    assert actions["pharmacy.prepare"] == 80
    assert actions["lock"] == 1 and actions["unblind.all"] == 1
    assert actions["kit.request"] == 60 + 1  # one repeat request after the replacement
    after_lock = [
        e
        for e in events
        if e["action"] == "refused" and e["details"]["message"].startswith("the database is locked")
    ]
    assert {(e["user"], e["details"]["command"]) for e in after_lock} == {
        ("ivan", "randomize"),
        ("ivan", "kit.replace"),
        ("petra", "pharmacy.prepare"),
    }
    assert all(e["at"].endswith("Z") for e in events)
    # the trail shown to the monitor after everything names no arm
    shown = story.run.ok("audit", "show", "--json", user="mona")
    assert arm_words_in(shown.stdout) == []
    listed = json.loads(shown.stdout)
    assert len(listed) == len(events) + 1  # and the reader's own login
    assert (listed[-1]["action"], listed[-1]["user"]) == ("auth.login", "mona")
    # and no export file was left by the refused early attempt
    assert story.early_export is not None and not story.early_export.exists()
