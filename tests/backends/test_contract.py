"""The Backend contract: the same calls give the same results and refusals on every backend.

Each test gets a prepared trial (one user per role, a generated list) and a
``trial`` object whose ``as_user(name)`` returns a backend acting as that
user. The ``backend_kind`` fixture (tests/backends/conftest.py) names every
backend the contract runs against; adding one there runs all of this again.
Refusals are compared by class and message, never only by "it failed".
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from randomizer import audit, reports
from randomizer.access import Role
from randomizer.allocation.kits import parse_code
from randomizer.allocation.service import Randomization
from randomizer.errors import (
    AuditError,
    AuthenticationFailed,
    Hint,
    Ineligible,
    InvalidInput,
    NotAuthorized,
    NotFound,
    RandomizerError,
    StateError,
    TooManyAttempts,
)
from randomizer.logins import LoginUnlock
from randomizer.results import LEGACY_FILE
from randomizer.sessions import LOCK_AFTER, check_throttle, record_failure
from randomizer.signatures import MEANINGS, Signature
from randomizer.store import Store
from tests.backends.conftest import ContractTrial
from tests.support.assertions import refused
from tests.support.database import execute
from tests.support.exosome import ARM_WORDS, ARMS, ELIGIBLE, PUBLIC_TEXT

START = date.today() - timedelta(days=100)
"""Randomization date: visit 2 (day 84, window 7) then falls on START + 84."""


def _randomize(trial: ContractTrial, participant: str, **answers: str) -> Randomization:
    return trial.as_user("ivan").randomize(
        participant,
        "WAW",
        {},
        {**ELIGIBLE, **answers},
        START,
        signature=trial.signed("ivan", "randomize"),
    )


def _refusal(error: type[RandomizerError], call: Callable[[], object]) -> str:
    """Call ``call()`` and return the message of the expected refusal."""
    return str(refused(error, call))


def _text(value: object) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    text = repr(value).lower()
    for public in PUBLIC_TEXT:
        text = text.replace(public.lower(), "")
    return text


def _assert_no_arm(value: object) -> None:
    text = _text(value)
    assert not [word for word in ARM_WORDS if word in text], text


# the blinded path ------------------------------------------------------------------


def test_randomize_gives_number_and_kit_and_no_arm(trial: ContractTrial) -> None:
    result = trial.as_user("ivan").randomize(
        "P-001", "WAW", {}, dict(ELIGIBLE), START, signature=trial.signed("ivan", "randomize")
    )
    assert (result.participant, result.randomization_number, result.site, result.visit) == (
        "P-001",
        "R-001",
        "WAW",
        1,
    )
    assert parse_code(result.kit) == result.kit
    _assert_no_arm(result)


def test_randomize_twice_is_refused_naming_the_number(trial: ContractTrial) -> None:
    _randomize(trial, "P-001")
    assert (
        _refusal(StateError, lambda: _randomize(trial, "P-001"))
        == "participant P-001 is already randomized as R-001"
    )


def test_ineligible_uses_no_slot_and_names_every_failure(trial: ContractTrial) -> None:
    message = _refusal(Ineligible, lambda: _randomize(trial, "P-001", age="70", edss="7.5"))
    assert message.startswith("participant P-001 is not eligible, no slot used: ")
    assert "age" in message.lower() and "edss" in message.lower()
    assert _randomize(trial, "P-002").randomization_number == "R-001"


def test_malformed_participant_id_is_invalid_input(trial: ContractTrial) -> None:
    message = _refusal(InvalidInput, lambda: _randomize(trial, "P 1"))
    assert message.startswith("participant id 'P 1' is not valid")


def test_kit_request_repeat_and_order(trial: ContractTrial) -> None:
    ivan = trial.as_user("ivan")
    first = _randomize(trial, "P-001")
    issued = ivan.request_kit("P-001", 2, START + timedelta(days=84))
    assert (issued.visit, issued.repeat) == (2, False)
    assert issued.kit != first.kit
    again = ivan.request_kit("P-001", 2, START + timedelta(days=84))
    assert (again.kit, again.repeat) == (issued.kit, True)
    message = _refusal(StateError, lambda: ivan.request_kit("P-001", 4, START + timedelta(days=90)))
    assert message.startswith("visit 4 comes after visit 3")
    assert (
        _refusal(NotFound, lambda: ivan.request_kit("P-404", 2))
        == "participant P-404 is not randomized in this trial"
    )


def test_replace_then_pharmacy(trial: ContractTrial) -> None:
    kit = _randomize(trial, "P-001").kit
    replaced = trial.as_user("ivan").replace_kit(kit, "bag damaged")
    assert replaced.voided == kit and replaced.kit != kit
    _assert_no_arm(replaced)
    petra = trial.as_user("petra")
    assert _refusal(StateError, lambda: petra.prepare_kit(kit)).startswith(
        f"kit {kit} is VOIDED (bag damaged)"
    )
    prepared = petra.prepare_kit(replaced.kit)
    assert prepared.arm in ARMS and prepared.participant == "P-001"
    listed = {k.kit: k for k in petra.pharmacy_list()}
    assert listed[replaced.kit].status == "prepared" and listed[kit].status == "voided"
    assert [k.kit for k in petra.pharmacy_list()] == sorted(listed)


def test_emergency_unblinding(trial: ContractTrial) -> None:
    _randomize(trial, "P-001")
    ivan = trial.as_user("ivan")
    with pytest.raises(InvalidInput) as raised:
        ivan.emergency_unblind("P-001", "  ", signature=trial.signed("ivan", "unblind.emergency"))
    assert (str(raised.value), raised.value.hint) == (
        "a reason is required to break the code: say why",
        Hint.REASON,
    )
    unblinding = ivan.emergency_unblind(
        "P-001", "anaphylaxis", signature=trial.signed("ivan", "unblind.emergency")
    )
    assert unblinding.arm in ARMS and unblinding.participant == "P-001"
    events = trial.as_user("mona").audit_events()
    recorded = [e for e in events if e.action == "unblind.emergency"]
    assert [(e.subject, e.reason, e.user) for e in recorded] == [("P-001", "anaphylaxis", "ivan")]


def test_lock_then_full_unblinding(trial: ContractTrial, tmp_path: Path) -> None:
    _randomize(trial, "P-001")
    stan = trial.as_user("stan")
    assert (
        _refusal(
            NotAuthorized,
            lambda: stan.unblind_all(signature=trial.signed("stan", "unblind.all")),
        )
        == "role statistician may unblind the whole trial only after the database lock"
    )
    locked = trial.as_user("alice").lock("database lock", signature=trial.signed("alice", "lock"))
    assert (locked.participants, locked.locked_by) == (1, "alice")
    export = stan.unblind_all(signature=trial.signed("stan", "unblind.all"))
    header, row = export.csv.decode().splitlines()
    assert header.startswith("participant,") and row.startswith("P-001,WAW,")
    # the analysis files come along on every backend
    assert set(export.files) == {"participants.csv", "kits.csv", "adsl.csv", "columns.json"}
    [participant] = csv.DictReader(export.files["participants.csv"].decode().splitlines())
    assert (participant["participant"], participant["randomization_date"]) == (
        "P-001",
        START.isoformat(),
    )
    [kit] = csv.DictReader(export.files["kits.csv"].decode().splitlines())
    assert (kit["participant"], kit["visit"], kit["status"]) == ("P-001", "1", "dispensed")
    assert export.file_sha256 == {
        name: hashlib.sha256(content).hexdigest() for name, content in export.files.items()
    }
    # to disk: the same bytes in the file and its companions, kept only when whole
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "final.csv"
    written = stan.unblind_all(signature=trial.signed("stan", "unblind.all"), out=out)
    assert (written.csv, written.files, written.sha256) == (b"", {}, export.sha256)
    assert written.file_sha256 == export.file_sha256
    contents = {LEGACY_FILE: export.csv, **export.files}
    assert {name: Path(path).read_bytes() for name, path in written.written.items()} == contents
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["final.csv", *(f"final.{name}" for name in export.files)]
    )
    assert (
        _refusal(
            InvalidInput,
            lambda: stan.unblind_all(signature=trial.signed("stan", "unblind.all"), out=out),
        )
        == f"{out} already exists: refusing to overwrite it"
    )
    assert out.read_bytes() == export.csv
    assert len(list(out.parent.iterdir())) == 5
    assert (
        _refusal(StateError, lambda: _randomize(trial, "P-002"))
        == "the database is locked: no more randomization"
    )
    assert stan.verify_list().commitment == trial.as_user("alice").verify_list().commitment


def test_a_voided_participant_keeps_its_slot_gets_no_kit_and_stays_in_the_export(
    trial: ContractTrial,
) -> None:
    first = _randomize(trial, "P-001")
    alice, ivan, petra = (trial.as_user(name) for name in ("alice", "ivan", "petra"))

    def void(user: str) -> Signature:
        return trial.signed(user, "participant.void")

    assert _refusal(
        NotAuthorized, lambda: ivan.void_participant("P-001", "typo", signature=void("ivan"))
    ) == ("role investigator may not void a randomization made in error")
    assert _refusal(
        InvalidInput, lambda: alice.void_participant("P-001", "  ", signature=void("alice"))
    ).startswith("a reason is required to void a randomization")
    voided = alice.void_participant(
        "p-001", "randomized under the wrong id", signature=void("alice")
    )
    assert (voided.participant, voided.randomization_number, voided.voided_by) == (
        "P-001",
        "R-001",
        "alice",
    )
    _assert_no_arm(voided)
    no_kit = "participant P-001 (R-001) was randomized in error and voided: "
    assert _refusal(
        StateError, lambda: ivan.request_kit("P-001", 2, START + timedelta(days=84))
    ) == (no_kit + "no kit is issued to them")
    assert _refusal(StateError, lambda: ivan.replace_kit(first.kit, "dropped")) == (
        no_kit + "no kit is issued to them"
    )
    assert _refusal(StateError, lambda: petra.prepare_kit(first.kit)) == (
        no_kit + f"do NOT prepare kit {first.kit}"
    )
    assert _refusal(
        StateError, lambda: alice.void_participant("P-001", "again", signature=void("alice"))
    ).startswith(f"participant P-001 is already voided (by alice at {voided.voided_at})")
    # the slot stays used: the next participant takes the next one
    assert _randomize(trial, "P-002").randomization_number == "R-002"
    assert [s.used for s in ivan.list_status().strata] == [2]
    recorded = [e for e in trial.as_user("mona").audit_events() if e.action == "participant.void"]
    assert [(e.user, e.subject, e.reason) for e in recorded] == [
        ("alice", "P-001", "randomized under the wrong id")
    ]
    alice.lock("database lock", signature=trial.signed("alice", "lock"))
    export = trial.as_user("stan").unblind_all(signature=trial.signed("stan", "unblind.all"))
    rows = list(csv.DictReader(export.csv.decode().splitlines()))
    assert [
        (r["participant"], r["status"], r["voided_by"], r["voided_at"], r["void_reason"])
        for r in rows
    ] == [
        ("P-001", "voided", "alice", voided.voided_at, "randomized under the wrong id"),
        ("P-002", "randomized", "", "", ""),
    ]


def test_dummy_unblinding_before_the_lock(trial: ContractTrial) -> None:
    _randomize(trial, "P-001")
    _randomize(trial, "P-002")
    export = trial.as_user("stan").unblind_dummy()
    assert export.participants == 2
    assert export.sha256 == hashlib.sha256(export.csv).hexdigest()
    rows = list(csv.DictReader(export.csv.decode().splitlines()))
    assert [(r["participant"], r["randomization_number"], r["dummy"]) for r in rows] == [
        ("P-001", "R-001", "yes"),
        ("P-002", "R-002", "yes"),
    ]
    assert {r["arm"] for r in rows} <= {f"dummy-{arm}" for arm in ARMS}
    adsl = list(csv.DictReader(export.files["adsl.csv"].decode().splitlines()))
    assert [(r["SUBJID"], r["DUMMYFL"]) for r in adsl] == [("P-001", "Y"), ("P-002", "Y")]
    assert (
        _refusal(NotAuthorized, trial.as_user("alice").unblind_dummy)
        == "role admin may not write a dummy unblinding"
    )
    recorded = [e for e in trial.as_user("mona").audit_events() if e.action == "unblind.dummy"]
    assert [(e.user, e.subject, e.details["participants"]) for e in recorded] == [
        ("stan", "exosome-ms", 2)
    ]


def test_reports_by_role(trial: ContractTrial) -> None:
    _randomize(trial, "P-001")
    blinded = trial.as_user("mona").report()
    _assert_no_arm(blinded)
    admin = trial.as_user("alice").report()
    assert admin.randomized == blinded.randomized == 1
    # what the charts draw travels whole: the blinded report keeps no allocation
    assert (blinded.allocations, blinded.arm_ratio) == ([], {})
    assert blinded.kits_by_visit["1"] == admin.kits_by_visit["1"]
    assert sum(blinded.kits_by_visit["1"].values()) == 1
    (listed,) = admin.allocations
    assert isinstance(listed, reports.ListedAllocation) and listed.arm in admin.arm_ratio


# roles, logins and users ------------------------------------------------------------


ROLE_REFUSALS = [
    ("petra", "randomize", "role pharmacist may not randomize participants"),
    ("mona", "randomize", "role monitor may not randomize participants"),
    ("ivan", "pharmacy_list", "role investigator may not see the pharmacy's list of kit contents"),
    ("ivan", "generate_list", "role investigator may not generate the allocation list"),
    ("mona", "lock", "role monitor may not lock the database"),
    ("ivan", "audit_events", "role investigator may not read the audit trail"),
    ("stan", "list_users", "role statistician may not manage users"),
    ("petra", "emergency_unblind", "role pharmacist may not break the code for one participant"),
    ("ivan", "unblind_dummy", "role investigator may not write a dummy unblinding"),
    ("stan", "verify_database", "role statistician may not verify the database"),
]


@pytest.mark.parametrize(("user", "method", "message"), ROLE_REFUSALS)
def test_role_refusals(trial: ContractTrial, user: str, method: str, message: str) -> None:
    backend = trial.as_user(user)
    calls = {
        "randomize": lambda: backend.randomize(
            "P-001", "WAW", {}, dict(ELIGIBLE), START, signature=trial.signed(user, "randomize")
        ),
        "pharmacy_list": backend.pharmacy_list,
        "generate_list": backend.generate_list,
        "lock": lambda: backend.lock("why", signature=trial.signed(user, "lock")),
        "audit_events": backend.audit_events,
        "list_users": backend.list_users,
        "emergency_unblind": lambda: backend.emergency_unblind(
            "P-001", "why", signature=trial.signed(user, "unblind.emergency")
        ),
        "unblind_dummy": backend.unblind_dummy,
        "verify_database": backend.verify_database,
    }
    assert _refusal(NotAuthorized, calls[method]).startswith(message)


def test_wrong_password_and_unknown_user_read_the_same(trial: ContractTrial) -> None:
    wrong = _refusal(
        AuthenticationFailed, lambda: trial.as_user("ivan", password="not-the-password").report()
    )
    unknown = _refusal(
        AuthenticationFailed, lambda: trial.as_user("nobody", password="whatever-12345").report()
    )
    assert wrong.replace("'ivan'", "X") == unknown.replace("'nobody'", "X")


def test_users_add_disable_passwd(trial: ContractTrial) -> None:
    alice = trial.as_user("alice")
    added = alice.add_user("ines", Role.INVESTIGATOR, "pw-ines-123456")
    assert (added.name, added.role, added.disabled) == ("ines", "investigator", False)
    assert "ines" in [u.name for u in alice.list_users()]
    assert (
        _refusal(StateError, lambda: alice.add_user("ines", Role.MONITOR, "pw-ines-123456"))
        == "user 'ines' already exists: pick another name"
    )
    trial.passwords["ines"] = "pw-ines-123456"
    trial.as_user("ines").change_password(None, "pw-ines-new-123456")
    trial.passwords["ines"] = "pw-ines-new-123456"
    assert trial.as_user("ines").report().randomized == 0
    alice.disable_user("ines", "left the study")
    _refusal(AuthenticationFailed, lambda: trial.as_user("ines").report())


def _fail_logins(trial: ContractTrial, user: str, client: str, times: int) -> None:
    store = Store(trial.files.db_url)
    try:
        with store.transaction() as session:
            for _ in range(times):
                record_failure(session, user, client, audit.now_utc())
    finally:
        store.dispose()


def _throttled(trial: ContractTrial, user: str, client: str) -> bool:
    store = Store(trial.files.db_url)
    try:
        with store.transaction() as session:
            check_throttle(session, user, client, audit.now_utc())
        return False
    except TooManyAttempts:
        return True
    finally:
        store.dispose()


def test_a_signature_with_a_wrong_password_is_refused_and_recorded(trial: ContractTrial) -> None:
    ivan = trial.as_user("ivan")
    ivan.report()  # logged in: over http the backend now holds a token, yet must sign

    def randomize(signature: Signature) -> Randomization:
        return ivan.randomize("P-001", "WAW", {}, dict(ELIGIBLE), START, signature=signature)

    wrong = trial.signed("ivan", "randomize", password="not-ivans-password")
    assert _refusal(AuthenticationFailed, lambda: randomize(wrong)) == (
        "signature refused for user 'ivan': wrong password or disabled account; nothing was done"
    )
    elsewhere = Signature(trial.passwords["ivan"], MEANINGS["lock"])
    assert _refusal(InvalidInput, lambda: randomize(elsewhere)) == (
        f"the signature's meaning is not this action's: sign {MEANINGS['randomize']!r}"
    )
    assert [s.used for s in ivan.list_status().strata] == [0]
    assert execute(
        trial.files.db_url, "SELECT failures FROM login_failures WHERE key = 'user:ivan'"
    ) == [(1,)]  # counted towards the login throttle
    randomize(trial.signed("ivan", "randomize"))
    events = trial.as_user("mona").audit_events()
    [failed] = [e for e in events if e.action == "signature.failed"]
    assert (failed.user, failed.subject, failed.details["command"]) == (
        "ivan",
        "P-001",
        "randomize",
    )
    assert failed.details["refusal"] == "wrong password"
    [signed] = [e for e in events if e.action == "randomize"]
    assert signed.details["signature"]["name"] == "ivan"
    assert signed.details["signature"]["meaning"] == MEANINGS["randomize"]
    assert signed.details["signature"]["at"] <= signed.at

    _fail_logins(trial, "ivan", "192.0.2.7", LOCK_AFTER)  # the user name is locked
    assert _refusal(
        TooManyAttempts,
        lambda: ivan.emergency_unblind(
            "P-001", "anaphylaxis", signature=trial.signed("ivan", "unblind.emergency")
        ),
    ).startswith("logins for this user name or from this address are locked")
    throttled = [e for e in trial.as_user("mona").audit_events() if e.action == "signature.failed"]
    assert throttled[-1].details["refusal"] == "throttled"
    assert not [e for e in trial.as_user("mona").audit_events() if e.action == "unblind.emergency"]


def test_an_admin_lifts_a_login_lock(trial: ContractTrial) -> None:
    _fail_logins(trial, "ivan", "192.0.2.7", LOCK_AFTER)
    assert _throttled(trial, "ivan", "198.51.100.1")
    alice = trial.as_user("alice")
    assert alice.lift_login_lock("ivan") == LoginUnlock("ivan", None, True)
    assert not _throttled(trial, "ivan", "198.51.100.1")
    assert _throttled(trial, "stan", "192.0.2.7")  # the address stays locked
    assert alice.lift_login_lock("ivan", "192.0.2.7") == LoginUnlock("ivan", "192.0.2.7", True)
    assert not _throttled(trial, "stan", "192.0.2.7")
    assert alice.lift_login_lock("nobody") == LoginUnlock("nobody", None, False)
    assert (
        _refusal(NotAuthorized, lambda: trial.as_user("mona").lift_login_lock("ivan"))
        == "role monitor may not manage users"
    )
    assert _refusal(InvalidInput, lambda: alice.lift_login_lock("ivan smith")).startswith(
        "user name 'ivan smith' is not valid"
    )
    events = [e for e in trial.as_user("mona").audit_events() if e.action == "user.unlock"]
    assert [(e.user, e.subject, e.details["client"], e.details["lifted"]) for e in events] == [
        ("alice", "ivan", None, True),
        ("alice", "ivan", "192.0.2.7", True),
        ("alice", "nobody", None, False),
    ]


def test_generate_list_twice_is_refused(trial: ContractTrial) -> None:
    message = _refusal(StateError, trial.as_user("alice").generate_list)
    assert message.startswith("the allocation list already exists")


def test_the_generator_cannot_approve_and_no_one_is_randomized_before_approval(
    draft_trial: ContractTrial,
) -> None:
    ivan, ada, stan = (draft_trial.as_user(name) for name in ("ivan", "ada", "stan"))

    def approve(user: str) -> Signature:
        return draft_trial.signed(user, "list.approve")

    draft = "the allocation list is a draft awaiting approval: no participant can be randomized"
    refused = _refusal(StateError, lambda: _randomize(draft_trial, "P-001"))
    assert refused.startswith(draft)
    assert ivan.list_status().state == "draft"
    assert _refusal(NotAuthorized, lambda: ada.approve_list(signature=approve("ada"))) == (
        "user ada generated the allocation list and may not approve it: a second admin or "
        "statistician reviews and approves it"
    )
    assert _refusal(NotAuthorized, lambda: ivan.approve_list(signature=approve("ivan"))) == (
        "role investigator may not approve the allocation list"
    )
    approval = stan.approve_list(signature=approve("stan"))
    assert (approval.generated_by, approval.approved_by) == ("ada", "stan")
    status = ivan.list_status()
    assert (status.state, status.approved_by, status.approved_at) == (
        "approved",
        "stan",
        approval.approved_at,
    )
    assert approval.commitment == status.commitment
    assert [(s.stratum, s.planned, s.generated) for s in approval.strata] == [
        (s.stratum, s.planned, s.generated) for s in status.strata
    ]
    assert approval.kits == sum(status.kits.values())
    assert approval.spare_kits == status.spare_kits
    _assert_no_arm(approval)
    assert _randomize(draft_trial, "P-001").randomization_number == "R-001"
    alice = draft_trial.as_user("alice")
    assert _refusal(StateError, lambda: alice.approve_list(signature=approve("alice"))).startswith(
        f"the allocation list is already approved by stan at {approval.approved_at}"
    )
    events = draft_trial.as_user("mona").audit_events()
    refusals = [(e.user, e.details["command"]) for e in events if e.action == "refused"]
    assert ("ivan", "randomize") in refusals and ("ada", "list.approve") in refusals
    [approved] = [e for e in events if e.action == "list.approve"]
    assert approved.user == "stan"
    assert approved.details["commitment"] == approval.commitment
    assert approved.details["state"] == {"before": "draft", "after": "approved"}


# the audit trail ---------------------------------------------------------------------


def test_checkpoint_is_returned_unsigned_and_verifies(trial: ContractTrial) -> None:
    alice = trial.as_user("alice")
    checkpoint = alice.audit_checkpoint()
    private_pem, public_pem = audit.new_signing_key()
    note = audit.sign_checkpoint(checkpoint, private_pem)
    assert audit.read_checkpoint(note, public_pem) == checkpoint
    report = trial.as_user("mona").audit_verify(checkpoint)
    assert report.checkpoint_seq == checkpoint.seq and report.events > checkpoint.seq
    forged = dataclasses.replace(checkpoint, head_mac="0" * 64)
    with pytest.raises(AuditError):
        alice.audit_verify(forged)


def test_audit_events_page(trial: ContractTrial) -> None:
    mona = trial.as_user("mona")
    first = mona.audit_events(limit=3)
    assert [e.seq for e in first] == [1, 2, 3]
    assert [e.seq for e in mona.audit_events(since=2, limit=2)] == [3, 4]


def test_list_status_counts_without_arms(trial: ContractTrial) -> None:
    _randomize(trial, "P-001")
    status = trial.as_user("mona").list_status()
    assert status.generated and not status.locked
    assert [(s.stratum, s.used) for s in status.strata] == [("all", 1)]
    assert status.strata[0].generated >= status.strata[0].planned == 20
    assert status.kits["dispensed"] == 1
    assert status.spare_kits_left == status.spare_kits > 0
    assert status.commitment == trial.as_user("alice").verify_list().commitment
    _assert_no_arm(status)


def test_participants_list_visits_and_kits_without_arms(trial: ContractTrial) -> None:
    first = _randomize(trial, "P-001")
    _randomize(trial, "P-002")
    ivan = trial.as_user("ivan")
    issued = ivan.request_kit("P-001", 2, START + timedelta(days=84))
    replaced = ivan.replace_kit(issued.kit, "bag damaged")
    trial.as_user("petra").prepare_kit(first.kit)
    rows = ivan.participant_view()
    assert [r.participant for r in rows] == ["P-001", "P-002"]
    p1 = rows[0]
    assert (p1.site, p1.randomization_number, p1.randomized_on, p1.randomized_by) == (
        "WAW",
        "R-001",
        START.isoformat(),
        "ivan",
    )
    assert p1.visits_done == 2 and not p1.emergency_unblinded
    assert [(k.visit, k.kit, k.status) for k in p1.kits] == [
        (1, first.kit, "prepared"),
        (2, issued.kit, "voided"),
        (2, replaced.kit, "requested"),
    ]
    _assert_no_arm(rows)
    ivan.emergency_unblind(
        "P-002", "anaphylaxis", signature=trial.signed("ivan", "unblind.emergency")
    )
    assert [r.emergency_unblinded for r in ivan.participant_view()] == [False, True]
    assert _refusal(NotAuthorized, trial.as_user("stan").participant_view).startswith(
        "role statistician may not"
    )


def test_pharmacy_list_says_who_requested_and_prepared_and_what_replaced(
    trial: ContractTrial,
) -> None:
    kit = _randomize(trial, "P-001").kit
    replaced = trial.as_user("ivan").replace_kit(kit, "bag damaged")
    petra = trial.as_user("petra")
    petra.prepare_kit(replaced.kit)
    listed = {k.kit: k for k in petra.pharmacy_list()}
    old, new = listed[kit], listed[replaced.kit]
    assert (old.status, old.void_reason, old.replaced_by, old.requested_by) == (
        "voided",
        "bag damaged",
        replaced.kit,
        "ivan",
    )
    assert (new.status, new.requested_by, new.prepared_by, new.randomization_number) == (
        "prepared",
        "ivan",
        "petra",
        "R-001",
    )
    assert new.requested_at.endswith("Z") and new.prepared_at.endswith("Z")
    assert new.visit_date == START.isoformat()
    spare = next(k for k in listed.values() if k.spare and k.status == "available")
    assert (spare.requested_at, spare.requested_by, spare.participant) == ("", "", "")


def test_kit_label_of_a_prepared_kit_only_and_never_the_arm(trial: ContractTrial) -> None:
    kit = _randomize(trial, "P-001").kit
    petra = trial.as_user("petra")
    refused = _refusal(StateError, lambda: petra.kit_label(kit))
    assert refused == (
        f"kit {kit} is requested, not prepared: a label is printed for a prepared kit "
        "only; prepare it first"
    )
    petra.prepare_kit(kit)
    label = petra.kit_label(kit.lower())
    assert (label.trial, label.kit, label.participant, label.randomization_number) == (
        "exosome-ms",
        kit,
        "P-001",
        "R-001",
    )
    assert label.visit == 1
    _assert_no_arm(label)
    events = trial.as_user("mona").audit_events()
    assert [e.subject for e in events if e.action == "pharmacy.label"] == [kit]
    assert _refusal(NotAuthorized, lambda: trial.as_user("ivan").kit_label(kit)).startswith(
        "role investigator may not prepare kits in the pharmacy"
    )


# second-person review of emergency unblindings ---------------------------------------


def test_review_of_an_emergency_unblinding(trial: ContractTrial) -> None:
    _randomize(trial, "P-001")
    alice = trial.as_user("alice")
    alice.emergency_unblind(
        "P-001", "anaphylaxis", signature=trial.signed("alice", "unblind.emergency")
    )
    mona = trial.as_user("mona")
    [item] = mona.unblinding_reviews()
    assert (item.participant, item.site, item.unblinded_by, item.reason, item.status) == (
        "P-001",
        "WAW",
        "alice",
        "anaphylaxis",
        "open",
    )
    _assert_no_arm(item)
    assert (
        _refusal(NotAuthorized, lambda: alice.close_review(item.id, "looked at it myself"))
        == f"user alice made unblinding {item.id} of P-001 and may not review it: "
        "another admin or monitor closes it"
    )
    assert (
        _refusal(NotAuthorized, lambda: trial.as_user("ivan").unblinding_reviews())
        == "role investigator may not review emergency unblindings"
    )
    assert (
        _refusal(InvalidInput, lambda: mona.close_review(item.id, " "))
        == "a note is required to close a review: say what was checked"
    )
    with pytest.raises(NotFound) as missing:
        mona.close_review(item.id + 1, "x")
    assert (str(missing.value), missing.value.hint) == (
        f"no review item {item.id + 1}",
        Hint.LIST_REVIEWS,
    )
    closed = mona.close_review(item.id, "called the site; reason confirmed")
    assert (closed.status, closed.closed_by, closed.note) == (
        "closed",
        "mona",
        "called the site; reason confirmed",
    )
    assert mona.unblinding_reviews() == []
    assert mona.unblinding_reviews(open_only=False) == [closed]
    assert _refusal(StateError, lambda: mona.close_review(item.id, "again")).startswith(
        f"review item {item.id} was already closed by mona at "
    )
    events = [e for e in mona.audit_events() if e.action.startswith("unblind.review.close")]
    assert [(e.user, e.subject, e.reason, e.details["review"]) for e in events] == [
        ("mona", "P-001", "called the site; reason confirmed", item.id)
    ]
    refusals = [e for e in mona.audit_events() if e.action == "refused"]
    assert any(
        e.user == "alice" and e.details["command"] == "unblind.review.close" for e in refusals
    )


def test_verify_database_names_a_broken_row_and_no_arm(trial: ContractTrial) -> None:
    _randomize(trial, "P-001")
    _randomize(trial, "P-002")
    report = trial.as_user("mona").verify_database()
    assert (report.ok, report.problems, report.list) == (True, (), "match")
    assert {t.table: t.rows for t in report.tables}["participants"] == 2
    assert report.rows == sum(t.rows for t in report.tables) and report.events > 0
    # a slot swapped between the two participants, without the key
    url = trial.files.db_url
    store = Store(url)
    try:
        with store.transaction() as session:
            [(a, slot_a), (b, slot_b)] = session.execute(
                text("SELECT id, slot_id FROM participants ORDER BY id")
            ).all()
            spare = session.execute(text("SELECT max(id) FROM slots")).scalar_one()
            for row, slot in ((a, spare), (b, slot_a), (a, slot_b)):
                session.execute(
                    text("UPDATE participants SET slot_id = :s WHERE id = :p"),
                    {"s": slot, "p": row},
                )
    finally:
        store.dispose()
    broken = trial.as_user("alice").verify_database()
    assert not broken.ok and broken.checkpoint_seq is None
    assert broken.problems == (
        f"participants row {a}: its MAC does not match (changed without the key)",
        f"participants row {b}: its MAC does not match (changed without the key)",
    )
    assert {t.table: t.problems for t in broken.tables}["participants"] == 2
    _assert_no_arm(broken)
