"""The pharmacist's lookup of one kit by its code, on every backend (the Backend contract).

``lookup_kit`` gives the very row of ``pharmacy_list`` for that kit, reads the code as
forgivingly as the CLI does, refuses a typo and a missing kit as the pharmacy page
always has, refuses every other role as the pharmacy list does, and is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from functools import partial

import pytest

from randomizer.allocation.kits import new_code
from randomizer.errors import KitCodeError, NotAuthorized, NotFound
from tests.backends.conftest import ContractTrial
from tests.support.assertions import refused
from tests.support.database import audit_rows
from tests.support.exosome import ELIGIBLE

START = date.today() - timedelta(days=100)


def _randomize(trial: ContractTrial, participant: str) -> str:
    """Randomize ``participant`` at WAW as ivan; the visit-1 kit's code."""
    return (
        trial.as_user("ivan")
        .randomize(
            participant,
            "WAW",
            {},
            dict(ELIGIBLE),
            START,
            signature=trial.signed("ivan", "randomize"),
        )
        .kit
    )


def test_a_lookup_gives_the_pharmacy_list_row_of_every_kind_of_kit(trial: ContractTrial) -> None:
    first = _randomize(trial, "P-001")
    ivan = trial.as_user("ivan")
    replaced = ivan.replace_kit(first, "bag damaged")
    second = _randomize(trial, "P-002")
    visit_2 = ivan.request_kit("P-002", 2, START + timedelta(days=84)).kit
    petra = trial.as_user("petra")
    petra.prepare_kit(replaced.kit)
    listed = {k.kit: k for k in petra.pharmacy_list()}
    unissued = next(k.kit for k in listed.values() if not k.spare and k.status == "available")
    spare = next(k.kit for k in listed.values() if k.spare and k.status == "available")
    for code in (first, replaced.kit, second, visit_2, unissued, spare):
        assert petra.lookup_kit(code) == listed[code], code
    assert (listed[first].replaced_by, listed[replaced.kit].requested_by) == (replaced.kit, "ivan")
    assert listed[visit_2].visit == 2 and listed[visit_2].requested_by == "ivan"


@pytest.mark.parametrize(
    "spelling",
    [str.lower, lambda c: f"  {c.replace('-', '')} ", lambda c: c.replace("0", "O")],
    ids=["lower", "spaces-no-dash", "O-for-0"],
)
def test_a_lookup_reads_a_typed_or_scanned_code_forgivingly(
    trial: ContractTrial, spelling: Callable[[str], str]
) -> None:
    kit = _randomize(trial, "P-001")
    found = trial.as_user("petra").lookup_kit(spelling(kit))
    assert (found.kit, found.participant, found.status, found.visit) == (
        kit,
        "P-001",
        "requested",
        1,
    )


def test_a_typo_and_a_missing_kit_are_refused_as_the_page_always_said(
    trial: ContractTrial,
) -> None:
    kit = _randomize(trial, "P-001")
    petra = trial.as_user("petra")
    typo = kit[:-1] + ("0" if kit[-1] != "0" else "2")
    assert str(refused(KitCodeError, lambda: petra.lookup_kit(typo))) == (
        f"kit code {typo} fails its check character: probably a typo; check the label"
    )
    missing = new_code()
    before = audit_rows(trial.files.db_url)
    assert str(refused(NotFound, lambda: petra.lookup_kit(missing))) == (
        f"no kit {missing} in this trial: check the label"
    )
    # as when the page searched the whole list: a code naming no kit is no refusal event
    assert [e["action"] for e in audit_rows(trial.files.db_url)[len(before) :]] in (
        [],
        ["auth.login"],
    )


@pytest.mark.parametrize(
    ("user", "role"),
    [
        ("ivan", "investigator"),
        ("mona", "monitor"),
        ("stan", "statistician"),
        ("alice", "admin"),
    ],
)
def test_every_other_role_is_refused_as_for_the_pharmacy_list_whatever_the_code(
    trial: ContractTrial, user: str, role: str
) -> None:
    kit = _randomize(trial, "P-001")
    backend = trial.as_user(user)
    message = f"role {role} may not see the pharmacy's list of kit contents"
    assert str(refused(NotAuthorized, backend.pharmacy_list)) == message
    # the role is checked first: a typo or a missing kit reads the same as a real one
    for code in (kit, kit[:-1] + ("0" if kit[-1] != "0" else "2"), new_code()):
        assert str(refused(NotAuthorized, partial(backend.lookup_kit, code))) == message
    refusals = [e for e in audit_rows(trial.files.db_url) if e["action"] == "refused"][-4:]
    assert [(e["user"], e["subject"], e["details"]["command"]) for e in refusals] == [
        (user, "", "pharmacy.list")
    ] * 4


def test_a_lookup_is_audited_exactly_as_the_pharmacy_list(trial: ContractTrial) -> None:
    kit = _randomize(trial, "P-001")
    petra = trial.as_user("petra")
    petra.pharmacy_list()
    listed = audit_rows(trial.files.db_url)[-1]
    petra.lookup_kit(kit.lower())
    looked = audit_rows(trial.files.db_url)[-1]
    shape = ("action", "user", "role", "subject", "reason", "details")
    assert [looked[k] for k in shape] == [listed[k] for k in shape]
    assert (looked["action"], looked["subject"]) == ("pharmacy.list", "")


def test_the_queue_is_the_list_s_requested_kits_oldest_first(trial: ContractTrial) -> None:
    """``pharmacy_queue`` reads only the requested kits, and gives what filtering the whole
    pharmacy list gave the page: requested and not prepared, oldest request first."""
    first = _randomize(trial, "P-001")
    ivan = trial.as_user("ivan")
    replaced = ivan.replace_kit(first, "bag damaged")  # the first leaves the queue, voided
    second = _randomize(trial, "P-002")
    visit_2 = ivan.request_kit("P-002", 2, START + timedelta(days=84)).kit
    third = _randomize(trial, "P-003")
    petra = trial.as_user("petra")
    petra.prepare_kit(second)  # prepared: out of the queue
    listed = petra.pharmacy_list()
    expected = sorted(
        (k for k in listed if k.status == "requested"), key=lambda k: (k.requested_at, k.kit)
    )
    queue = petra.pharmacy_queue()
    assert queue == expected
    assert [k.kit for k in queue] == [replaced.kit, visit_2, third]
    assert all(k.requested_by == "ivan" for k in queue)


def test_the_queue_is_refused_and_audited_as_the_pharmacy_list(trial: ContractTrial) -> None:
    _randomize(trial, "P-001")
    message = "role investigator may not see the pharmacy's list of kit contents"
    assert str(refused(NotAuthorized, trial.as_user("ivan").pharmacy_queue)) == message
    petra = trial.as_user("petra")
    petra.pharmacy_list()
    listed = audit_rows(trial.files.db_url)[-1]
    petra.pharmacy_queue()
    queued = audit_rows(trial.files.db_url)[-1]
    shape = ("action", "user", "role", "subject", "reason", "details")
    assert [queued[k] for k in shape] == [listed[k] for k in shape]
