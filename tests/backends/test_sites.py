"""Per-site rights through every backend: a user limited to a site acts on and sees only it.

The trial has sites WAW and KRK (tests.support.sites); wanda is an investigator
limited to WAW, kris one limited to KRK, pia, mila and sam a pharmacist,
monitor and statistician limited to WAW; the usual users are trial-wide. Each
test runs on the local and the HTTP backend. Another site's participant or kit
must be refused exactly as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import date, timedelta

import pytest

from randomizer.access import Role
from randomizer.allocation.kits import new_code
from randomizer.allocation.service import window_of
from randomizer.backends.http import HttpBackend
from randomizer.backends.interface import Backend
from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials
from randomizer.errors import (
    Ineligible,
    InvalidInput,
    NotAuthorized,
    NotFound,
    StateError,
)
from randomizer.sites import PARTICIPANT_ACTIONS
from tests.backends.conftest import BACKEND_KINDS, ContractTrial
from tests.backends.live import live_server
from tests.support.assertions import refused
from tests.support.exosome import DESIGN, ELIGIBLE
from tests.support.sites import SITE_PASSWORDS
from tests.support.trial import TrialFiles

START = date.today() - timedelta(days=100)


@pytest.fixture(params=BACKEND_KINDS)
def sites(request: pytest.FixtureRequest, two_sites: TrialFiles) -> Iterator[ContractTrial]:
    """The two-site trial through each backend, with P-101 at WAW and P-201 at KRK."""
    with ExitStack() as stack:
        connect: Callable[[str, str], Backend]
        if request.param == "http":
            url = stack.enter_context(live_server(two_sites.db_url, two_sites.key_file))

            def connect(user: str, password: str) -> Backend:
                return HttpBackend(url, credentials=lambda: Credentials(user, password))
        else:

            def connect(user: str, password: str) -> Backend:
                return LocalBackend(
                    two_sites.db_url, two_sites.key_file, lambda: Credentials(user, password)
                )

        prepared = ContractTrial(two_sites, connect, passwords=dict(SITE_PASSWORDS))
        prepared.as_user("wanda").randomize(
            "P-101",
            "WAW",
            {},
            dict(ELIGIBLE),
            START,
            signature=prepared.signed("wanda", "randomize"),
        )
        prepared.as_user("kris").randomize(
            "P-201",
            "KRK",
            {},
            dict(ELIGIBLE),
            START,
            signature=prepared.signed("kris", "randomize"),
        )
        yield prepared
        for backend in prepared.opened:
            backend.close()


def _same_refusal(call: Callable[[str], object], other_sites: str, missing: str) -> tuple[str, str]:
    """The refusals of ``call`` for another site's id and a missing one: same class and hint,
    and the same message once each names its own id."""
    first = refused(NotFound, lambda: call(other_sites))
    second = refused(NotFound, lambda: call(missing))
    assert first.hint == second.hint
    assert str(first).replace(other_sites, "ID") == str(second).replace(missing, "ID")
    return str(first), str(second)


def test_an_investigator_of_one_site_cannot_act_on_or_see_another_sites_participants(
    sites: ContractTrial,
) -> None:
    wanda = sites.as_user("wanda")
    assert (
        str(
            refused(
                NotAuthorized,
                lambda: wanda.randomize(
                    "P-102",
                    "KRK",
                    {},
                    dict(ELIGIBLE),
                    START,
                    signature=sites.signed("wanda", "randomize"),
                ),
            )
        )
        == "user wanda may not randomize participants at site KRK: limited to site WAW"
    )
    first, _ = _same_refusal(lambda p: wanda.request_kit(p, 2), "P-201", "P-999")
    assert first == "participant P-201 is not randomized in this trial"
    _same_refusal(
        lambda p: wanda.emergency_unblind(
            p, "anaphylaxis", signature=sites.signed("wanda", "unblind.emergency")
        ),
        "P-201",
        "P-999",
    )
    krk_kit = next(p for p in sites.as_user("petra").pharmacy_list() if p.participant == "P-201")
    first, _ = _same_refusal(lambda k: wanda.replace_kit(k, "bag damaged"), krk_kit.kit, new_code())
    assert first == f"no kit {krk_kit.kit} in this trial: check the label"
    # the id is taken trial-wide: refused, without the other site's number
    assert str(
        refused(
            StateError,
            lambda: wanda.randomize(
                "P-201",
                "WAW",
                {},
                dict(ELIGIBLE),
                START,
                signature=sites.signed("wanda", "randomize"),
            ),
        )
    ) == (
        "participant P-201 is already randomized at another site: participant ids are "
        "unique across the trial; check the id"
    )

    assert [p.participant for p in wanda.participant_view()] == ["P-101"]
    assert [p.participant for p in wanda.participant_view("WAW")] == ["P-101"]
    assert (
        str(refused(NotAuthorized, lambda: wanda.participant_view("KRK")))
        == "user wanda may not see participants at site KRK: limited to site WAW"
    )
    report = wanda.report()
    assert (report.randomized, report.by_site) == (1, {"WAW": 1})
    assert report.kits["dispensed"] == 1 and report.kits["available"] == 0
    assert [p.participant for p in sites.as_user("kris").participant_view()] == ["P-201"]

    # her own site's participant she acts on as before
    assert wanda.request_kit("P-101", 2, START + timedelta(days=84)).visit == 2
    assert (
        wanda.emergency_unblind(
            "P-101", "anaphylaxis", signature=sites.signed("wanda", "unblind.emergency")
        ).participant
        == "P-101"
    )


def test_refusals_for_another_sites_participant_are_audited_as_for_a_missing_one(
    sites: ContractTrial,
) -> None:
    wanda = sites.as_user("wanda")
    _same_refusal(lambda p: wanda.request_kit(p, 2), "P-201", "P-999")
    events = [
        e
        for e in sites.as_user("mona").audit_events()
        if e.user == "wanda" and e.action == "refused"
    ]
    assert [e.subject for e in events] == ["P-201", "P-999"]
    first, second = (
        {
            "role": e.role,
            "reason": e.reason,
            "details": {
                k: (v.replace(e.subject, "ID") if isinstance(v, str) else v)
                for k, v in e.details.items()
                if k != "via"
            },
        }
        for e in events
    )
    assert first == second
    assert first["details"] == {
        "command": "kit.request",
        "refusal": "NotFound",
        "message": "participant ID is not randomized in this trial",
    }


def test_trial_wide_users_see_every_site(sites: ContractTrial) -> None:
    ivan = sites.as_user("ivan")
    assert [p.participant for p in ivan.participant_view()] == ["P-101", "P-201"]
    assert [p.participant for p in ivan.participant_view("KRK")] == ["P-201"]
    assert ivan.request_kit("P-201", 2, START + timedelta(days=84)).visit == 2
    assert sites.as_user("alice").report().by_site == {"KRK": 1, "WAW": 1}
    assert sites.as_user("mona").report().randomized == 2
    assert {k.participant for k in sites.as_user("petra").pharmacy_list()} >= {"P-101", "P-201"}


def test_limited_pharmacist_monitor_and_statistician_see_their_site_only(
    sites: ContractTrial,
) -> None:
    pia = sites.as_user("pia")
    kits = pia.pharmacy_list()
    assert [k.participant for k in kits] == ["P-101"]
    krk_kit = next(k for k in sites.as_user("petra").pharmacy_list() if k.participant == "P-201")
    _same_refusal(pia.prepare_kit, krk_kit.kit, new_code())
    assert pia.prepare_kit(kits[0].kit).participant == "P-101"
    assert sites.as_user("mila").report().by_site == {"WAW": 1}
    assert [p.participant for p in sites.as_user("mila").participant_view()] == ["P-101"]
    export = sites.as_user("sam").unblind_dummy()
    assert export.participants == 1
    assert [line.split(",")[0] for line in export.csv.decode().splitlines()[1:]] == ["P-101"]


def test_a_limited_pharmacist_looks_up_their_sites_kits_only(sites: ContractTrial) -> None:
    pia = sites.as_user("pia")
    (own,) = pia.pharmacy_list()
    assert pia.lookup_kit(own.kit.lower()) == own
    petra = sites.as_user("petra")
    krk_kit = next(k for k in petra.pharmacy_list() if k.participant == "P-201")
    _same_refusal(pia.lookup_kit, krk_kit.kit, new_code())
    # a trial-wide pharmacist's lookup of it shows a WAW monitor no KRK kit
    assert petra.lookup_kit(krk_kit.kit) == krk_kit
    shown = repr(sites.as_user("mila").audit_events())
    assert "pharmacy.list" in shown and krk_kit.kit not in shown


def test_participant_view_counts_visits_and_gives_the_next_window(sites: ContractTrial) -> None:
    wanda = sites.as_user("wanda")
    (before,) = wanda.participant_view()
    first, last = window_of(DESIGN.visit(2), START)
    assert (before.randomization_number, before.site, before.visits_done) == ("R-001", "WAW", 1)
    assert (before.next_visit, before.next_visit_name) == (2, "Week 12")
    assert (before.window_from, before.window_to) == (first.isoformat(), last.isoformat())
    assert before.last_visit_date == START.isoformat()
    wanda.request_kit("P-101", 2, START + timedelta(days=84))
    (after,) = wanda.participant_view()
    assert (after.visits_done, after.next_visit) == (2, 3)
    assert after.last_visit_date == (START + timedelta(days=84)).isoformat()
    assert (after.window_from, after.window_to) == tuple(
        d.isoformat() for d in window_of(DESIGN.visit(3), START)
    )


def test_an_admin_limits_a_user_to_sites_and_lifts_it(sites: ContractTrial) -> None:
    alice = sites.as_user("alice")
    added = alice.add_user("nina", Role.INVESTIGATOR, "pw-nina-123456", ["WAW"])
    assert (added.name, added.sites) == ("nina", ("WAW",))
    assert alice.user_sites("nina").sites == ("WAW",)
    sites.passwords["nina"] = "pw-nina-123456"
    assert [p.participant for p in sites.as_user("nina").participant_view()] == ["P-101"]
    assert alice.set_user_sites("nina", ["WAW", "KRK", "WAW"]).sites == ("KRK", "WAW")
    assert [p.participant for p in sites.as_user("nina").participant_view()] == [
        "P-101",
        "P-201",
    ]
    assert alice.set_user_sites("nina", []).sites == ()
    assert {u.name: u.sites for u in alice.list_users()}["wanda"] == ("WAW",)
    assert (
        str(refused(InvalidInput, lambda: alice.set_user_sites("nina", ["GDA"])))
        == "site 'GDA' is not a site of this trial: use one of WAW, KRK"
    )
    assert (
        str(refused(NotAuthorized, lambda: sites.as_user("ivan").set_user_sites("nina", [])))
        == "role investigator may not manage users"
    )
    events = [e for e in sites.as_user("mona").audit_events() if e.action == "user.sites"]
    assert [
        (e.user, e.subject, e.details["before"], e.details["after"])
        for e in events
        if e.subject == "nina"
    ] == [
        ("alice", "nina", {"sites": ["WAW"]}, {"sites": ["KRK", "WAW"]}),
        ("alice", "nina", {"sites": ["KRK", "WAW"]}, {"sites": []}),
    ]
    added_event = next(
        e
        for e in sites.as_user("mona").audit_events()
        if e.action == "user.add" and e.subject == "nina"
    )
    assert added_event.details["after"] == {
        "role": "investigator",
        "disabled": False,
        "sites": ["WAW"],
    }


def test_an_admin_limited_to_a_site_grants_rights_within_it_only(sites: ContractTrial) -> None:
    sites.as_user("alice").add_user("ada", Role.ADMIN, "pw-ada-123456", ["WAW"])
    sites.passwords["ada"] = "pw-ada-123456"
    ada = sites.as_user("ada")
    beyond = "user ada is limited to site WAW: only a trial-wide admin may give {} rights beyond "
    assert (
        str(refused(NotAuthorized, lambda: ada.add_user("xena", Role.MONITOR, "pw-xena-123456")))
        == beyond.format("xena") + "those sites"
    )
    assert ada.add_user("xena", Role.MONITOR, "pw-xena-123456", ["WAW"]).sites == ("WAW",)
    for name, new in (("kris", ["WAW"]), ("ivan", ["WAW"]), ("xena", []), ("xena", ["KRK"])):
        assert (
            str(
                refused(NotAuthorized, lambda: ada.set_user_sites(name, new))  # noqa: B023
            )
            == beyond.format(name) + "those sites"
        )
    assert sites.as_user("alice").user_sites("kris").sites == ("KRK",)
    assert str(refused(NotAuthorized, lambda: ada.disable_user("kris", "left"))) == (
        "user ada is limited to site WAW: only a trial-wide admin may disable kris, who acts "
        "beyond those sites"
    )
    assert str(
        refused(NotAuthorized, lambda: ada.change_password("ivan", "pw-ivan-new-123456"))
    ) == (
        "user ada is limited to site WAW: only a trial-wide admin may set the password of "
        "ivan, who acts beyond those sites"
    )
    assert ada.disable_user("xena", "left").disabled
    _same_refusal(
        lambda p: ada.emergency_unblind(
            p, "anaphylaxis", signature=sites.signed("ada", "unblind.emergency")
        ),
        "P-201",
        "P-999",
    )
    assert ada.report().by_site == {"WAW": 1}


def test_list_status_of_a_limited_user_counts_their_sites_only(sites: ContractTrial) -> None:
    mine = sites.as_user("mila").list_status()
    assert [s.used for s in mine.strata] == [1]
    assert (mine.kits["dispensed"], mine.kits["available"]) == (1, 0)
    everyone = sites.as_user("mona").list_status()
    assert [s.used for s in everyone.strata] == [2]
    assert everyone.kits["dispensed"] == 2 and everyone.kits["available"] > 0
    assert mine.spare_kits_left == everyone.spare_kits_left


def test_a_limited_reader_sees_only_their_sites_events_and_screen_failures(
    sites: ContractTrial,
) -> None:
    wanda, kris = sites.as_user("wanda"), sites.as_user("kris")
    kris.request_kit("P-201", 2, START + timedelta(days=84))
    krk_kit = next(k for k in sites.as_user("petra").pharmacy_list() if k.participant == "P-201")
    kris.replace_kit(krk_kit.kit, "bag damaged")
    wanda.request_kit("P-101", 2, START + timedelta(days=84))
    refused(NotFound, lambda: wanda.request_kit("P-201", 3))
    refused(NotFound, lambda: wanda.request_kit("P-999", 3))

    def screen_failure(user: str, participant: str, site: str) -> None:
        backend = sites.as_user(user)
        answers = {**ELIGIBLE, "age": "70"}
        refused(
            Ineligible,
            lambda: backend.randomize(
                participant, site, {}, answers, START, signature=sites.signed(user, "randomize")
            ),
        )

    screen_failure("wanda", "P-102", "WAW")
    screen_failure("kris", "P-202", "KRK")
    screen_failure("ivan", "P-203", "KRK")

    def about_participants(user: str) -> list[tuple[str, str]]:
        return [
            (e.action, e.subject)
            for e in sites.as_user(user).audit_events()
            if e.action in PARTICIPANT_ACTIONS
            or e.details.get("command") in PARTICIPANT_ACTIONS
            and e.action in ("refused", "screen_failure")
        ]

    assert about_participants("mila") == [
        ("randomize", "P-101"),
        ("kit.request", "P-101"),
        ("screen_failure", "P-102"),
    ]
    everything = about_participants("mona")
    assert ("kit.replace", krk_kit.kit) in everything and ("refused", "P-999") in everything
    assert ("screen_failure", "P-203") in everything
    assert len(everything) == 10
    # a page of a limited reader's events holds only what they may see
    assert [e.subject for e in sites.as_user("mila").audit_events(limit=200)][-1] != "P-202"
    assert (wanda.report().screen_failures, kris.report().screen_failures) == (1, 2)
    assert sites.as_user("mona").report().screen_failures == 3
