"""The conduct pages: list approval, participant void, unblinding reviews, users' sites.

Each page calls one Backend method; refusals are the library's own messages.
Blinded roles see no arm on any of them.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from randomizer.signatures import meaning_of
from tests.support.database import audit_rows
from tests.support.exosome import arm_words_in
from tests.support.trial import GENERATOR_PASSWORD, TrialFiles
from tests.support.web import Browser, text_of, web_app


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
    assert (
        "Blinded QC summary" in page.text and html.escape(meaning_of("list.approve")) in page.text
    )
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
