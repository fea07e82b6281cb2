"""Electronic signatures in the pages: the meaning shown, the password re-entered, never kept.

Randomizing, breaking the blind, locking and the final unblinding are signed on
their confirmation step: the page shows the library's meaning and asks the
password; a wrong one is the library's refusal (recorded as ``signature.failed``),
shown next to the field with what was typed kept, and the password itself never
comes back in any response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from randomizer.signatures import meaning_of
from tests.support.blinded_path import days_ago
from tests.support.database import audit_rows
from tests.support.trial import PASSWORDS, TrialFiles
from tests.support.web import (
    Browser,
    logged_in,
    randomize_form,
    randomize_through_pages,
    text_of,
)

START = days_ago(10)


def _rows(files: TrialFiles, action: str) -> list[dict[str, Any]]:
    return [r for r in audit_rows(files.db_url) if r["action"] == action]


def _everything(response: httpx.Response) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    return f"{response.status_code}\n{headers}\n{response.text}"


def _signing_field(page: str, action: str) -> None:
    """The page asks for the signature of ``action``: its meaning and the password field."""
    assert meaning_of(action) in text_of(page)
    assert '<label for="password">Password (your electronic signature)</label>' in page
    assert 'name="password" type="password" value="" autocomplete="current-password"' in page


def test_the_confirmation_shows_the_meaning_and_a_wrong_password_is_refused_and_recorded(
    browser: Callable[[], Browser], trial_with_list: TrialFiles
) -> None:
    ivan = logged_in(browser, "ivan")
    ivan.get("/randomize")
    confirm = ivan.post("/randomize/confirm", randomize_form("P-001", START, age="44"))
    _signing_field(confirm.text, "randomize")
    fields = ivan.hidden("/randomize")
    assert "password" not in fields
    refused = ivan.post("/randomize", {**fields, "password": "not-my-password"})
    assert refused.status_code == 401
    message = "signature refused for user 'ivan': wrong password or disabled account"
    assert message in text_of(refused.text)
    assert 'id="password-error"' in refused.text and 'aria-invalid="true"' in refused.text
    assert '<a href="#password">' in refused.text  # the error summary links to the field
    assert "<h1>Confirm the randomization</h1>" in refused.text
    kept = ivan.hidden("/randomize")
    assert kept["participant"] == "P-001" and kept["answer.age"] == "44"
    assert "not-my-password" not in refused.text and "password" not in kept
    failed = _rows(trial_with_list, "signature.failed")
    assert len(failed) == 1 and failed[0]["user"] == "ivan"
    assert _rows(trial_with_list, "randomize") == []
    # the same confirmation, signed with the right password, randomizes
    done = ivan.post("/randomize", ivan.signed(kept))
    assert done.status_code == 303
    assert done.headers["location"] == "/participants/P-001?randomized=1"


def test_a_page_randomization_is_recorded_with_its_signature(
    browser: Callable[[], Browser], trial_with_list: TrialFiles
) -> None:
    ivan = logged_in(browser, "ivan")
    randomize_through_pages(ivan, "P-001", START)
    (event,) = _rows(trial_with_list, "randomize")
    details = event["details"]
    assert isinstance(details, dict)
    signature = details["signature"]
    assert signature["name"] == "ivan"
    assert signature["meaning"] == meaning_of("randomize")
    assert signature["at"]
    assert details["via"]["channel"] == "web"


def test_a_wrong_signature_on_an_emergency_unblinding_reveals_nothing(
    browser: Callable[[], Browser], trial_with_list: TrialFiles
) -> None:
    ivan = logged_in(browser, "ivan")
    randomize_through_pages(ivan, "P-001", START)
    ivan.get("/unblind")
    confirm = ivan.post("/unblind/confirm", {"participant": "P-001", "reason": "anaphylaxis"})
    _signing_field(confirm.text, "unblind.emergency")
    refused = ivan.post("/unblind", {**ivan.hidden("/unblind"), "password": "guess-123456"})
    assert refused.status_code == 401
    assert "signature refused for user 'ivan'" in text_of(refused.text)
    assert 'id="password-error"' in refused.text
    assert ivan.hidden("/unblind")["reason"] == "anaphylaxis"
    assert _rows(trial_with_list, "unblind.emergency") == []
    assert len(_rows(trial_with_list, "signature.failed")) == 1
    shown = ivan.post("/unblind", ivan.signed(ivan.hidden("/unblind")))
    assert shown.status_code == 200
    (event,) = _rows(trial_with_list, "unblind.emergency")
    assert event["details"]["signature"]["meaning"] == meaning_of("unblind.emergency")


def test_lock_and_final_unblinding_are_signed(
    browser: Callable[[], Browser], trial_with_list: TrialFiles
) -> None:
    alice = logged_in(browser, "alice")
    _signing_field(alice.get("/lock").text, "lock")
    wrong = alice.post("/lock", {"reason": "done", "confirm": "yes", "password": "nope-nope-1"})
    assert wrong.status_code == 401 and 'id="password-error"' in wrong.text
    assert "signature refused for user 'alice'" in text_of(wrong.text)
    assert ">done</textarea>" in wrong.text  # the reason stays
    assert _rows(trial_with_list, "lock") == []
    locked = alice.post("/lock", alice.signed({"reason": "done", "confirm": "yes"}))
    assert locked.status_code == 200 and "The database is locked." in locked.text
    assert _rows(trial_with_list, "lock")[0]["details"]["signature"]["name"] == "alice"
    stan = logged_in(browser, "stan")
    _signing_field(stan.get("/unblinding").text, "unblind.all")
    refused = stan.post("/unblinding", {"password": "wrong-password-1"})
    assert refused.status_code == 401 and 'id="password-error"' in refused.text
    assert refused.headers["content-type"].startswith("text/html")
    assert _rows(trial_with_list, "unblind.all") == []
    export = stan.post("/unblinding", stan.signed())
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert _rows(trial_with_list, "unblind.all")[0]["details"]["signature"]["meaning"] == (
        meaning_of("unblind.all")
    )
    assert len(_rows(trial_with_list, "signature.failed")) == 2


def test_the_password_never_comes_back_in_a_response_a_header_a_cookie_or_the_trail(
    browser: Callable[[], Browser], trial_with_list: TrialFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ivan = logged_in(browser, "ivan")
    randomize_through_pages(ivan, "P-001", START)
    # a double submit of the signed confirmation, and a refused randomization
    ivan.get("/randomize")
    ivan.post("/randomize/confirm", randomize_form("P-002", START))
    fields = ivan.signed(ivan.hidden("/randomize"))
    ivan.post("/randomize", fields)
    ivan.post("/randomize", fields)
    ivan.follow()
    ivan.post("/randomize/confirm", randomize_form("P-003", START, edss="9"))
    ivan.post("/randomize", ivan.signed(ivan.hidden("/randomize")))
    ivan.get("/unblind")
    ivan.post("/unblind/confirm", {"participant": "P-001", "reason": "anaphylaxis"})
    ivan.post("/unblind", ivan.signed(ivan.hidden("/unblind")))
    secret = PASSWORDS["ivan"]
    assert len(ivan.responses) > 10
    for response in ivan.responses:
        assert secret not in _everything(response), response.request.url
        assert secret not in str(ivan.client.cookies.jar)
    for row in audit_rows(trial_with_list.db_url):
        assert secret not in repr(row)
    assert caplog.records  # the server logged, and never the password
    assert secret not in caplog.text
