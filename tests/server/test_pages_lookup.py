"""The pharmacist's kit lookup page: one kit found by its code, never the whole list."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest

from randomizer import sessions
from randomizer.allocation import service
from tests.support.blinded_path import live_kit
from tests.support.database import audit_rows
from tests.support.exosome import arm_words_in
from tests.support.trial import PASSWORDS, Run, TrialFiles
from tests.support.web import Browser, Clock, logged_in, text_of


def _whole_list_read(*_: object) -> list[service.PharmacyKit]:
    raise AssertionError("the lookup read the whole pharmacy list")


def test_the_lookup_shows_one_kit_without_reading_the_whole_list(
    pages: Callable[[], Browser], run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = live_kit(run.files, "P-002", 1)
    new = json.loads(
        run.ok("kit", "replace", code, "--reason", "bag damaged", "--json", user="ivan").stdout
    )["kit"]
    monkeypatch.setattr(service, "pharmacy_list", _whole_list_read)
    petra = logged_in(pages, "petra")
    voided = text_of(petra.get("/pharmacy/lookup", code=code.lower()).text)
    assert f"Kit {code}" in voided
    assert f"Voided bag damaged; replaced by {new}" in voided
    page = petra.get("/pharmacy/lookup", code=new.replace("-", " "))
    assert page.status_code == 200
    shown = text_of(page.text)
    assert "Status requested Participant P-002 (R-" in shown
    assert f"Prepare kit {new} and record it" in shown
    last = audit_rows(run.files.db_url)[-1]
    assert (last["action"], last["user"], last["subject"]) == ("pharmacy.list", "petra", "")


def test_a_kit_not_in_the_trial_is_named_next_to_the_field(
    pages: Callable[[], Browser],
) -> None:
    page = logged_in(pages, "petra").get("/pharmacy/lookup", code="1234-567Y")
    assert page.status_code == 404
    assert "no kit 1234-567Y in this trial: check the label" in text_of(page.text)
    assert 'id="code-error"' in page.text and 'aria-invalid="true"' in page.text


@pytest.mark.parametrize(
    ("user", "role"),
    [("ivan", "investigator"), ("mona", "monitor"), ("stan", "statistician")],
)
def test_blinded_roles_are_refused_the_lookup_whatever_the_code(
    pages: Callable[[], Browser], run: Run, user: str, role: str
) -> None:
    code = live_kit(run.files, "P-001", 1)
    typo = code[:-1] + ("0" if code[-1] != "0" else "2")
    browser = logged_in(pages, user)
    for typed in (code, typo, "1234-567Y"):
        page = browser.get("/pharmacy/lookup", code=typed)
        assert page.status_code == 403, typed
        shown = text_of(page.text)
        assert f"role {role} may not see the pharmacy's list of kit contents" in shown
        assert arm_words_in(shown) == [], shown
        assert "Prepare kit" not in shown


def test_an_expired_session_brings_the_lookup_back_with_the_code_typed(
    browser: Callable[[], Browser], clock: Clock, trial_with_list: TrialFiles
) -> None:
    petra = logged_in(browser, "petra")
    petra.get("/pharmacy/lookup")
    clock.now += sessions.IDLE_TIMEOUT + timedelta(seconds=1)
    login = petra.post("/pharmacy/prepare", {"page": "/pharmacy/lookup", "code": "1234-567Y"})
    assert login.status_code == 401
    kept = petra.hidden("/login")
    assert (kept["page"], kept["keep.code"]) == ("/pharmacy/lookup", "1234-567Y")
    back = petra.post("/login", {**kept, "user": "petra", "password": PASSWORDS["petra"]})
    assert back.status_code == 200
    assert "You are logged in again." in text_of(back.text)
    assert 'value="1234-567Y"' in back.text and "<h2>Kit" not in back.text
    assert "pharmacy.prepare" not in [e["action"] for e in audit_rows(trial_with_list.db_url)]
