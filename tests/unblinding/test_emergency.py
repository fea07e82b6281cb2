"""Emergency unblinding of one participant (issue 4, docs/architecture.md section 7 step 8).

It reveals that one participant's arm and nothing else, marks the
participant, is audited with user, time and reason before the arm is opened,
is never gated on approval or the lock, and reveals nothing if the audit
write fails.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from randomizer import context
from randomizer.errors import AuditError
from randomizer.signatures import MEANINGS
from tests.support.assertions import assert_error, assert_no_arm
from tests.support.blinded_path import fail_audit_for, refused
from tests.support.database import audit_rows, dump_database, execute, without_audit
from tests.support.exosome import DESIGN, arm_words_in
from tests.support.trial import Run, TrialFiles

REASON = "anaphylaxis after infusion; treating physician needs the product"
ARM_INDEX = [pytest.param(0, id="first-arm"), pytest.param(1, id="second-arm")]


@pytest.fixture
def trial(run: Run, by_arm: dict[str, str]) -> TrialFiles:
    """The trial of ``by_arm``."""
    return run.files


def unblinded(files: TrialFiles) -> list[tuple[str, str]]:
    return [
        (code, by)
        for code, by in execute(
            files.db_url,
            "SELECT code, emergency_unblinded_by FROM participants "
            "WHERE emergency_unblinded_at IS NOT NULL ORDER BY code",
        )
    ]


@pytest.mark.parametrize("index", ARM_INDEX)
def test_reveals_that_participant_only(
    run: Run, trial: TrialFiles, by_arm: dict[str, str], index: int
) -> None:
    arm = DESIGN.arms[index]
    other = DESIGN.arms[1 - index]
    participant = by_arm[arm.id]
    number = execute(
        trial.db_url, "SELECT randomization_number FROM participants WHERE code = :p", p=participant
    )[0][0]
    before = datetime.now(UTC)
    result = run.ok("unblind", "emergency", participant, "--reason", f"  {REASON} ", user="ivan")
    assert result.stdout == (
        f"EMERGENCY UNBLINDING of {participant} ({number}): {arm.label} "
        f"[{arm.id}]. This has been recorded with your reason.\n"
    )
    # the other arm is named nowhere, and no other participant either
    for word in (
        other.id,
        other.label.lower(),
        *(["placebo"] if "placebo" in other.label.lower() else []),
    ):
        assert word not in result.stdout.lower()
    assert re.findall(r"P-\d{3}", result.stdout) == [participant]
    assert re.findall(r"R-\d{3}", result.stdout) == [number]

    assert unblinded(trial) == [(participant, "ivan")]
    event = [e for e in audit_rows(trial.db_url) if e["action"] == "unblind.emergency"]
    assert len(event) == 1
    event_at = datetime.strptime(event[0]["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before <= event_at <= datetime.now(UTC)
    assert (event[0]["user"], event[0]["role"], event[0]["subject"], event[0]["reason"]) == (
        "ivan",
        "investigator",
        participant,
        REASON,
    )
    signature = event[0]["details"].pop("signature")
    assert event[0]["details"] == {"randomization_number": number, "previously_unblinded": False}
    assert (signature["name"], signature["meaning"]) == ("ivan", MEANINGS["unblind.emergency"])
    assert signature["at"] <= event[0]["at"]
    assert arm_words_in(json.dumps(event[0])) == []


def test_json_output(run: Run, by_arm: dict[str, str]) -> None:
    arm, participant = next(iter(sorted(by_arm.items())))
    data = json.loads(
        run.ok(
            "unblind", "emergency", participant, "--reason", REASON, "--json", user="ivan"
        ).stdout
    )
    assert data["participant"] == participant
    assert (data["arm"], data["label"]) == (arm, DESIGN.arm(arm).label)
    assert set(data) == {"participant", "arm", "label", "randomization_number", "unblinded_at"}


def test_an_admin_may_break_the_code_too(
    run: Run, trial: TrialFiles, by_arm: dict[str, str]
) -> None:
    arm, participant = next(iter(sorted(by_arm.items())))
    result = run.ok("unblind", "emergency", participant, "--reason", REASON, user="alice")
    assert f"{DESIGN.arm(arm).label} [{arm}]" in result.stdout
    assert unblinded(trial) == [(participant, "alice")]
    assert audit_rows(trial.db_url)[-1]["role"] == "admin"


def test_a_second_unblinding_is_allowed_and_audited(
    run: Run, trial: TrialFiles, by_arm: dict[str, str]
) -> None:
    participant = sorted(by_arm.values())[0]
    first = run.ok("unblind", "emergency", participant, "--reason", REASON, user="ivan")
    second = run.ok(
        "unblind", "emergency", participant, "--reason", "second physician", user="alice"
    )
    assert first.stdout.split(":")[1] == second.stdout.split(":")[1]
    assert unblinded(trial) == [(participant, "ivan")]  # the first stays recorded
    events = [e for e in audit_rows(trial.db_url) if e["action"] == "unblind.emergency"]
    assert [(e["user"], e["reason"], e["details"]["previously_unblinded"]) for e in events] == [
        ("ivan", REASON, False),
        ("alice", "second physician", True),
    ]


def test_never_gated_by_the_lock(run: Run, trial: TrialFiles, by_arm: dict[str, str]) -> None:
    run.ok("lock", "--reason", "database lock", user="alice")
    participant = sorted(by_arm.values())[0]
    run.ok("unblind", "emergency", participant, "--reason", REASON, user="ivan")
    assert unblinded(trial) == [(participant, "ivan")]


@pytest.mark.parametrize("reason", ["", " ", " \t\n "])
def test_a_reason_is_required(run: Run, by_arm: dict[str, str], reason: str) -> None:
    participant = sorted(by_arm.values())[0]
    refused(
        run,
        "unblind",
        "emergency",
        participant,
        "--reason",
        reason,
        user="ivan",
        code=2,
        fragments=("--reason must not be empty: say why",),
    )


def test_the_reason_option_is_mandatory(run: Run, by_arm: dict[str, str]) -> None:
    participant = sorted(by_arm.values())[0]
    refused(
        run,
        "unblind",
        "emergency",
        participant,
        user="ivan",
        code=2,
        fragments=("Missing option '--reason'",),
    )


@pytest.mark.parametrize("user", ["mona", "stan", "petra"])
def test_other_roles_may_not_break_the_code(run: Run, by_arm: dict[str, str], user: str) -> None:
    participant = sorted(by_arm.values())[0]
    message = refused(
        run,
        "unblind",
        "emergency",
        participant,
        "--reason",
        REASON,
        user=user,
        code=1,
        command="unblind.emergency",
    )
    assert message.endswith(" may not break the code for one participant")
    assert arm_words_in(message) == []


def test_unknown_participant(run: Run, by_arm: dict[str, str]) -> None:
    refused(
        run,
        "unblind",
        "emergency",
        "P-404",
        "--reason",
        REASON,
        user="ivan",
        code=1,
        fragments=("participant P-404 is not randomized in this trial",),
    )


# the audit write fails: nothing is revealed ------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        pytest.param(
            AuditError("the audit trail could not be written: disk full"),
            1,
            "the audit trail could not be written: disk full",
            id="audit-error",
        ),
        pytest.param(
            RuntimeError("disk I/O error"),
            1,
            "internal error (RuntimeError)",
            id="unexpected-error",
        ),
    ],
)
@pytest.mark.parametrize("index", ARM_INDEX)
def test_a_failed_audit_write_reveals_nothing(
    run: Run,
    trial: TrialFiles,
    by_arm: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    index: int,
    error: BaseException,
    code: int,
    message: str,
) -> None:
    participant = by_arm[DESIGN.arm_ids[index]]
    before = dump_database(trial.db_url)
    attempted = fail_audit_for(monkeypatch, "unblind.emergency", error)
    result = run("unblind", "emergency", participant, "--reason", REASON, "--json", user="ivan")
    assert "unblind.emergency" in attempted
    assert_error(result, code, message)
    assert result.stdout == ""
    assert_no_arm(result, "failed unblinding")
    assert without_audit(dump_database(trial.db_url)) == without_audit(before)
    assert unblinded(trial) == []
    assert [e for e in audit_rows(trial.db_url) if e["action"] == "unblind.emergency"] == []


def test_a_failed_audit_through_the_operation_reveals_nothing(
    run: Run, trial: TrialFiles, by_arm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, failing ``Operation.audit`` itself rather than the append below it."""
    real = context.Operation.audit

    def audit(self: context.Operation, action: str, *args: object, **kwargs: object) -> object:
        if action == "unblind.emergency":
            raise AuditError("audit write failed")
        return real(self, action, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(context.Operation, "audit", audit)
    participant = sorted(by_arm.values())[0]
    result = run("unblind", "emergency", participant, "--reason", REASON, user="ivan")
    assert_error(result, 1, "audit write failed")
    assert_no_arm(result, "failed unblinding")
    assert unblinded(trial) == []
    refusal = audit_rows(trial.db_url)[-1]
    assert (refusal["action"], refusal["subject"], refusal["details"]["command"]) == (
        "refused",
        participant,
        "unblind.emergency",
    )
