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
from datetime import date, timedelta

import pytest
from sqlalchemy import text

from randomizer import audit
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
from randomizer.sessions import LOCK_AFTER, check_throttle, record_failure
from randomizer.store import Store
from tests.backends.conftest import ContractTrial
from tests.support.exosome import ARM_WORDS, ARMS, ELIGIBLE, PUBLIC_TEXT

START = date.today() - timedelta(days=100)
"""Randomization date: visit 2 (day 84, window 7) then falls on START + 84."""


def _randomize(trial: ContractTrial, participant: str, **answers: str) -> Randomization:
    return trial.as_user("ivan").randomize(participant, "WAW", {}, {**ELIGIBLE, **answers}, START)


def _refusal(error: type[RandomizerError], call: object) -> str:
    """Call ``call()`` and return the message of the expected refusal."""
    assert callable(call)
    with pytest.raises(error) as raised:
        call()
    assert type(raised.value) is error, f"{type(raised.value).__name__}: {raised.value}"
    return str(raised.value)


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
    result = trial.as_user("ivan").randomize("P-001", "WAW", {}, dict(ELIGIBLE), START)
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
        ivan.emergency_unblind("P-001", "  ")
    assert (str(raised.value), raised.value.hint) == (
        "a reason is required to break the code: say why",
        Hint.REASON,
    )
    unblinding = ivan.emergency_unblind("P-001", "anaphylaxis")
    assert unblinding.arm in ARMS and unblinding.participant == "P-001"
    events = trial.as_user("mona").audit_events()
    recorded = [e for e in events if e.action == "unblind.emergency"]
    assert [(e.subject, e.reason, e.user) for e in recorded] == [("P-001", "anaphylaxis", "ivan")]


def test_lock_then_full_unblinding(trial: ContractTrial) -> None:
    _randomize(trial, "P-001")
    stan = trial.as_user("stan")
    assert (
        _refusal(NotAuthorized, stan.unblind_all)
        == "role statistician may unblind the whole trial only after the database lock"
    )
    locked = trial.as_user("alice").lock("database lock")
    assert (locked.participants, locked.locked_by) == (1, "alice")
    export = stan.unblind_all()
    header, row = export.csv.decode().splitlines()
    assert header.startswith("participant,") and row.startswith("P-001,WAW,")
    assert (
        _refusal(StateError, lambda: _randomize(trial, "P-002"))
        == "the database is locked: no more randomization"
    )
    assert stan.verify_list().commitment == trial.as_user("alice").verify_list().commitment


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
        "randomize": lambda: backend.randomize("P-001", "WAW", {}, dict(ELIGIBLE), START),
        "pharmacy_list": backend.pharmacy_list,
        "generate_list": backend.generate_list,
        "lock": lambda: backend.lock("why"),
        "audit_events": backend.audit_events,
        "list_users": backend.list_users,
        "emergency_unblind": lambda: backend.emergency_unblind("P-001", "why"),
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
