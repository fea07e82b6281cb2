"""The conduct pages: list approval, participant void, unblinding reviews, users' sites.

Each page calls one Backend method; refusals are the library's own messages.
Blinded roles see no arm on any of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from randomizer.allocation.service import window_of
from randomizer.signatures import meaning_of
from tests.support.blinded_path import FOUR_DAY0
from tests.support.database import audit_rows
from tests.support.exosome import DESIGN, arm_words_in
from tests.support.sites import SITE_PASSWORDS
from tests.support.trial import GENERATOR_PASSWORD, Run, TrialFiles
from tests.support.web import (
    Browser,
    everything,
    logged_in,
    shape,
    text_of,
    web_app,
)


def _rows(files: TrialFiles, action: str) -> list[dict[str, Any]]:
    return [r for r in audit_rows(files.db_url) if r["action"] == action]


# list approval ------------------------------------------------------------------------


@pytest.fixture
def draft(trial_with_draft_list: TrialFiles) -> Iterator[Callable[[], Browser]]:
    with web_app(trial_with_draft_list.db_url, trial_with_draft_list.key_file) as make:
        yield make


def test_the_generator_may_not_approve_the_list_a_second_person_does_with_a_signature(
    draft: Callable[[], Browser], trial_with_draft_list: TrialFiles
) -> None:
    ada = draft()
    ada.login("ada", GENERATOR_PASSWORD)
    listing = ada.get("/list")
    assert "draft" in text_of(listing.text)
    page = ada.follow_link("review and approve the list")
    assert page.status_code == 200
    assert "Blinded QC summary" in page.text
    assert meaning_of("list.approve") in text_of(page.text)
    assert arm_words_in(page.text) == []
    refused = ada.post("/list/approve", ada.signed())
    assert refused.status_code == 403
    assert "user ada generated the allocation list and may not approve it" in text_of(refused.text)
    stan = draft()
    home = stan.login("stan")
    assert '<a href="/list/approve">Approve the list</a>' in home.text
    stan.get("/list/approve")
    wrong = stan.post("/list/approve", {"password": "wrong-password"})
    assert wrong.status_code == 401 and 'id="password-error"' in wrong.text
    assert _rows(trial_with_draft_list, "list.approve") == []
    approved = stan.post("/list/approve", stan.signed())
    assert approved.status_code == 200
    assert "The allocation list is approved by stan" in text_of(approved.text)
    assert 'action="/list/approve"' not in approved.text  # no second approval offered
    assert arm_words_in(approved.text) == []
    (event,) = _rows(trial_with_draft_list, "list.approve")
    assert event["user"] == "stan"
    assert event["details"]["signature"]["meaning"] == meaning_of("list.approve")


def test_a_monitor_may_not_approve_the_list(draft: Callable[[], Browser]) -> None:
    mona = draft()
    mona.login("mona")
    mona.get("/list/approve")
    refused = mona.post("/list/approve", mona.signed())
    assert refused.status_code == 403
    assert "role monitor may not" in text_of(refused.text)


# participant void ---------------------------------------------------------------------


@pytest.fixture
def four(run: Run, by_arm: dict[str, str]) -> Iterator[Callable[[], Browser]]:
    """The trial with P-001..P-004 randomized, in the app."""
    with web_app(run.files.db_url, run.files.key_file) as make:
        yield make


def _no_arm(response: Any, what: str) -> None:
    assert "Traceback" not in response.text, what
    assert arm_words_in(everything(response)) == [], (what, arm_words_in(everything(response)))


def test_an_admin_voids_a_randomization_with_a_reason_and_a_signature(
    four: Callable[[], Browser], run: Run, by_arm: dict[str, str]
) -> None:
    alice = logged_in(four, "alice")
    participant = by_arm[DESIGN.arm_ids[0]]
    page = alice.get(f"/participants/{participant}")
    form = alice.follow_link(f"Void the randomization of {participant}")
    assert form.status_code == 200
    assert meaning_of("participant.void") in text_of(form.text)
    target = f"/participants/{participant}/void"
    no_reason = alice.post(target, alice.signed({"reason": " "}))
    assert no_reason.status_code == 400 and 'id="reason-error"' in no_reason.text
    assert "a reason is required to void a randomization" in text_of(no_reason.text)
    wrong = alice.post(target, {"reason": "randomized twice", "password": "wrong-password"})
    assert wrong.status_code == 401 and 'id="password-error"' in wrong.text
    assert ">randomized twice</textarea>" in wrong.text
    assert _rows(run.files, "participant.void") == []
    assert len(_rows(run.files, "signature.failed")) == 1
    done = alice.post(target, alice.signed({"reason": "randomized twice"}))
    assert done.status_code == 303
    assert done.headers["location"] == f"/participants/{participant}?voided=1"
    shown = alice.follow()
    assert "voided: randomized twice (by alice" in text_of(shown.text)
    (event,) = _rows(run.files, "participant.void")
    assert event["details"]["signature"]["name"] == "alice"
    assert page.status_code == 200
    again = alice.post(target, alice.signed({"reason": "again"}))
    assert again.status_code == 409 and f"participant {participant} is already voided" in (
        text_of(again.text)
    )


def test_an_investigator_may_not_void_and_sees_the_status_never_an_arm(
    four: Callable[[], Browser], run: Run, by_arm: dict[str, str]
) -> None:
    ivan = logged_in(four, "ivan")
    first, second = (by_arm[arm] for arm in DESIGN.arm_ids)
    page = ivan.get(f"/participants/{first}")
    assert "Void the randomization" not in page.text
    ivan.get(f"/participants/{first}/void")
    refused = ivan.post(f"/participants/{first}/void", ivan.signed({"reason": "mistake"}))
    assert refused.status_code == 403 and "role investigator may not" in text_of(refused.text)
    _no_arm(refused, "void refused")
    alice = logged_in(four, "alice")
    for participant in (first, second):
        alice.get(f"/participants/{participant}/void")
        voided = alice.post(
            f"/participants/{participant}/void", alice.signed({"reason": "wrong person"})
        )
        assert voided.status_code == 303
    pages = [ivan.get(f"/participants/{p}") for p in (first, second)]
    for shown in pages:
        _no_arm(shown, "voided participant page")
        assert "voided: wrong person" in text_of(shown.text)
        assert "Request the kit" not in shown.text
    stamp = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z?")  # when each was voided
    assert stamp.sub("<at>", shape(pages[0])) == stamp.sub("<at>", shape(pages[1]))
    listing = ivan.get("/participants")
    _no_arm(listing, "participant list")
    assert text_of(listing.text).count("voided: wrong person") == 2


def test_the_participant_list_shows_the_next_visit_window_and_status(
    four: Callable[[], Browser],
) -> None:
    ivan = logged_in(four, "ivan")
    listing = ivan.get("/participants")
    text = text_of(listing.text)
    assert "Next visit Window from Window to" in text
    second = DESIGN.visits[1]
    assert f"{second.number}: {second.name}" in text
    window_from, window_to = window_of(second, FOUR_DAY0)
    assert f"{window_from.isoformat()} {window_to.isoformat()}" in text
    assert text.count(" randomized") >= 4


# unblinding reviews ---------------------------------------------------------------------


def _unblind(browser: Browser, participant: str) -> None:
    browser.get("/unblind")
    browser.post("/unblind/confirm", {"participant": participant, "reason": "anaphylaxis"})
    shown = browser.post("/unblind", browser.signed(browser.hidden("/unblind")))
    assert shown.status_code == 200, shown.text


def test_reviewers_list_and_close_unblinding_reviews_never_seeing_an_arm(
    four: Callable[[], Browser], run: Run, by_arm: dict[str, str]
) -> None:
    ivan = logged_in(four, "ivan")
    first, second = (by_arm[arm] for arm in DESIGN.arm_ids)
    _unblind(ivan, first)
    _unblind(ivan, second)
    mona = logged_in(four, "mona")
    home = mona.get("/")
    assert '<a href="/reviews">Unblinding reviews</a>' in home.text
    report = mona.get("/report")
    assert "Unblindings awaiting review 2" in text_of(report.text)
    page = mona.follow_link("review them")
    assert page.status_code == 200
    _no_arm(page, "open reviews")
    text = text_of(page.text)
    for participant in (first, second):
        assert participant in text
    assert text.count("anaphylaxis") == 2 and "ivan" in text
    ids = re.findall(r'action="/reviews/(\d+)/close"', page.text)
    assert len(ids) == 2
    no_note = mona.post(f"/reviews/{ids[0]}/close", {"note": " "})
    assert no_note.status_code == 400 and f'id="note-{ids[0]}-error"' in no_note.text
    assert "a note is required to close a review" in text_of(no_note.text)
    closed = mona.post(f"/reviews/{ids[0]}/close", {"note": "checked with the site"})
    assert closed.status_code == 303 and closed.headers["location"] == f"/reviews?done={ids[0]}"
    shown = mona.follow()
    _no_arm(shown, "after closing")
    assert f"Review {ids[0]} is closed." in shown.text
    assert f'action="/reviews/{ids[0]}/close"' not in shown.text
    assert f'action="/reviews/{ids[1]}/close"' in shown.text
    every = mona.follow_link("Show every review")
    _no_arm(every, "every review")
    assert "checked with the site" in text_of(every.text)
    (event,) = _rows(run.files, "unblind.review.close")
    assert event["user"] == "mona"
    assert "Unblindings awaiting review 1" in text_of(mona.get("/report").text)


def test_an_unblinder_may_not_close_their_own_review_and_an_investigator_sees_none(
    four: Callable[[], Browser], run: Run, by_arm: dict[str, str]
) -> None:
    alice = logged_in(four, "alice")
    _unblind(alice, by_arm[DESIGN.arm_ids[0]])
    alice.get("/reviews")
    refused = alice.post("/reviews/1/close", {"note": "fine"})
    assert refused.status_code == 403
    assert "user alice made unblinding 1" in text_of(refused.text)
    assert ">fine</textarea>" in refused.text
    ivan = logged_in(four, "ivan")
    page = ivan.get("/reviews")
    assert page.status_code == 403 and "role investigator may not" in text_of(page.text)
    _no_arm(page, "investigator reviews")
    ivan.get("/")
    closing = ivan.post("/reviews/1/close", {"note": "fine"})
    assert closing.status_code == 403
    assert _rows(run.files, "unblind.review.close") == []


# users and their sites ------------------------------------------------------------------


@pytest.fixture
def sites(two_sites: TrialFiles) -> Iterator[Callable[[], Browser]]:
    with web_app(two_sites.db_url, two_sites.key_file) as make:
        yield make


def test_the_admin_adds_a_user_limited_to_sites_and_changes_them(
    sites: Callable[[], Browser], two_sites: TrialFiles
) -> None:
    alice = logged_in(sites, "alice")
    page = alice.get("/users")
    assert '<label for="site-1">WAW</label>' in page.text
    assert '<label for="site-2">KRK</label>' in page.text
    assert "wanda" in text_of(page.text)
    fields = {"name": "olga", "role": "investigator", "password": "pw-olga-123456789"}
    response = alice.client.post(
        "/users",
        data={**fields, "sites": ["KRK"], "csrf_token": alice.csrf()},
        headers={"Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    listing = alice.get("/users")
    assert "olga investigator active KRK" in text_of(listing.text)
    both = alice.client.post(
        "/users/olga/sites",
        data={"sites": ["WAW", "KRK"], "csrf_token": alice.csrf()},
        headers={"Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert both.status_code == 303 and both.headers["location"] == "/users?done=sites"
    listing = alice.get("/users")
    assert "olga investigator active WAW, KRK" in text_of(listing.text) or (
        "olga investigator active KRK, WAW" in text_of(listing.text)
    )
    everywhere = alice.post("/users/olga/sites", {})
    assert everywhere.status_code == 303
    assert "olga investigator active all sites" in text_of(alice.get("/users").text)
    unknown = alice.post("/users/olga/sites", {"sites": "XXX"})
    assert unknown.status_code in (400, 404)
    assert "XXX" in text_of(unknown.text)


def test_only_the_admin_sets_sites(sites: Callable[[], Browser]) -> None:
    wanda = logged_in(sites, "wanda", SITE_PASSWORDS["wanda"])
    wanda.get("/")
    refused = wanda.post("/users/kris/sites", {"sites": "WAW"})
    assert refused.status_code == 403 and "may not" in text_of(refused.text)
