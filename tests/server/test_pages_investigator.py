"""The investigator's pages: randomize and confirm, the result, kits, the list, unblinding."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import timedelta

import pytest

from randomizer import sessions
from randomizer.design import parse_design
from randomizer.server.pages.investigator import randomize_input_errors
from tests.support.blinded_path import days_ago, live_kit, participant_arms
from tests.support.database import audit_rows
from tests.support.designs import design_toml, in_range
from tests.support.exosome import DESIGN, arm_words_in
from tests.support.trial import PASSWORDS, TrialFiles
from tests.support.web import (
    Browser,
    Clock,
    randomize_form,
    randomize_through_pages,
    text_of,
)

START = days_ago(100)
"""Randomization date: visit 2 (day 84, window 7) is then due 9 to 23 days ago."""


@pytest.fixture
def ivan(browser: Callable[[], Browser]) -> Browser:
    b = browser()
    b.login("ivan")
    return b


def _actions(files: TrialFiles) -> list[str]:
    return [r["action"] for r in audit_rows(files.db_url)]


def test_the_form_asks_every_criterion_with_its_range_or_yes_no(ivan: Browser) -> None:
    page = ivan.get("/randomize").text
    for criterion in DESIGN.criteria:
        name = f"answer.{criterion.id}"
        if criterion.kind == "range":
            assert f'<label for="{name}">{criterion.question}</label>' in page
            assert f"From {criterion.rule()}" in page
        else:
            assert f"<legend>{criterion.question}</legend>" in page
            for answer in ("yes", "no"):
                assert f'<label for="{name}-{answer}">' in page
    assert '<select id="site" name="site"' in page


def test_randomize_confirms_then_shows_number_and_kit(
    ivan: Browser, trial_with_list: TrialFiles
) -> None:
    ivan.get("/randomize")
    confirm = ivan.post("/randomize/confirm", randomize_form("p-001", START))
    assert confirm.status_code == 200
    assert "Randomize participant <strong>P-001</strong> at site <strong>WAW</strong>?" in (
        confirm.text
    )
    assert "randomize" not in _actions(trial_with_list)  # nothing recorded before the confirmation
    ivan.post("/randomize", ivan.signed(ivan.hidden("/randomize")))
    assert ivan.last is not None
    assert ivan.last.headers["location"] == "/participants/P-001?randomized=1"
    result = ivan.follow()
    assert result.status_code == 200
    kit = live_kit(trial_with_list, "P-001", 1)
    assert f'<p class="code-big">{kit}</p>' in result.text
    assert "R-001" in result.text
    assert result.headers["Cache-Control"] == "no-store"
    randomized = [r for r in audit_rows(trial_with_list.db_url) if r["action"] == "randomize"]
    assert randomized[0]["details"]["via"]["channel"] == "web"


def test_a_confirmation_posted_twice_randomizes_once_and_shows_the_same_result(
    ivan: Browser, trial_with_list: TrialFiles
) -> None:
    ivan.get("/randomize")
    ivan.post("/randomize/confirm", randomize_form("P-001", START))
    fields = ivan.signed(ivan.hidden("/randomize"))
    first = ivan.post("/randomize", fields)
    second = ivan.post("/randomize", fields)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert _actions(trial_with_list).count("randomize") == 1
    # a resubmission without this confirmation's token is the library's refusal
    forged = ivan.post("/randomize", {**fields, "idem": "0.0.0"})
    assert forged.status_code == 409
    assert "participant P-001 is already randomized as R-001" in text_of(forged.text)


def test_an_ineligible_answer_shows_every_failing_criterion(
    ivan: Browser, trial_with_list: TrialFiles
) -> None:
    ivan.get("/randomize")
    ivan.post("/randomize/confirm", randomize_form("P-001", START, age="70", edss="9"))
    page = ivan.post("/randomize", ivan.signed(ivan.hidden("/randomize")))
    assert page.status_code == 409
    text = text_of(page.text)
    assert "participant P-001 is not eligible, no slot used" in text
    assert 'id="answer.age-error"' in page.text and 'id="answer.edss-error"' in page.text
    assert 'id="answer.progressive_ms-error"' not in page.text
    assert 'value="70"' in page.text  # what was typed stays in the form
    assert "randomize" not in _actions(trial_with_list)


def _form_errors(page: str) -> dict[str, str]:
    """Each field's error shown next to it on a page, by field name."""
    found = re.findall(
        r'<p class="field-error" id="([^"]+)-error"><span class="visually-hidden">Error:</span> '
        r"([^<]*)</p>",
        page,
    )
    return {name: html.unescape(message) for name, message in found}


def test_an_empty_randomize_form_stays_with_every_error_and_no_confirmation(
    ivan: Browser, trial_with_list: TrialFiles
) -> None:
    ivan.get("/randomize")
    page = ivan.post("/randomize/confirm", {"page": "/randomize"})
    assert page.status_code == 400
    assert "Randomize participant" not in page.text
    assert '<form method="post" action="/randomize/confirm"' in page.text
    errors = _form_errors(page.text)
    expected = {"participant", "site", *(f"answer.{c.id}" for c in DESIGN.criteria)}
    assert set(errors) == expected
    assert "participant id '' is not valid" in errors["participant"]
    assert "site '' is not valid" in errors["site"]
    assert errors["answer.age"].startswith("missing answer for age (")
    start = page.text.index('class="error-summary"')
    summary = html.unescape(page.text[start : page.text.index("</ul>", start)])
    for name, message in errors.items():
        assert f'<a href="#{name}">{message}</a>' in summary
    assert "randomize" not in _actions(trial_with_list)


def test_a_half_filled_randomize_form_names_each_malformed_field_and_keeps_what_was_typed(
    ivan: Browser,
) -> None:
    ivan.get("/randomize")
    fields = randomize_form("P 001", START, site="XYZ", age="forty", edss="4,5")
    del fields["answer.progressive_ms"]
    fields["answer.other_neuro_autoimmune"] = "maybe"
    fields["date"] = "30/11/2026"
    page = ivan.post("/randomize/confirm", fields)
    assert page.status_code == 400
    errors = _form_errors(page.text)
    assert set(errors) == {
        "participant",
        "site",
        "answer.age",
        "answer.progressive_ms",
        "answer.other_neuro_autoimmune",
        "date",
    }
    assert errors["answer.age"] == "answer age='forty' must be a number"
    assert errors["answer.other_neuro_autoimmune"] == (
        "answer other_neuro_autoimmune='maybe' must be yes or no"
    )
    assert "is not a site of this trial" in errors["site"]
    assert "use YYYY-MM-DD" in errors["date"]
    for typed in ('value="P 001"', 'value="forty"', 'value="4,5"', 'value="30/11/2026"'):
        assert typed in page.text
    assert 'id="answer.edss-error"' not in page.text  # a decimal comma is well formed
    assert 'aria-invalid="true"' in page.text


def test_the_randomize_form_checks_each_stratum_level_with_the_library() -> None:
    design = parse_design(
        design_toml(
            planned_participants=12,
            arms=["a", "b"],
            block_sizes=[2],
            factors={"type": ["PPMS", "SPMS"], "edss": ["low", "high"]},
            criteria=[in_range("age", "Age?", 18, 65)],
        )
    )
    errors = randomize_input_errors(
        design, {"participant": "P-1", "site": "WAW", "level.type": "RRMS", "answer.age": "70"}
    )
    assert errors == {
        "level.type": "stratum type='RRMS' is not a level; use one of: PPMS, SPMS",
        "level.edss": "missing stratum edss=LEVEL (one of: low, high)",
    }  # age 70 is well formed: its ineligibility is for the library's randomize to say


def test_participant_list_shows_numbers_visits_and_kits_never_an_arm(
    ivan: Browser, trial_with_list: TrialFiles
) -> None:
    randomize_through_pages(ivan, "P-001", START)
    randomize_through_pages(ivan, "P-002", START)
    page = ivan.get("/participants")
    assert page.status_code == 200
    for participant in ("P-001", "P-002"):
        assert live_kit(trial_with_list, participant, 1) in page.text
    assert "R-001" in page.text and "R-002" in page.text
    assert arm_words_in(page.text) == []
    assert len(set(participant_arms(trial_with_list).values())) in (1, 2)


def test_the_participant_list_counts_visits_with_a_kit_issued_as_the_library_does(
    ivan: Browser, trial_with_list: TrialFiles
) -> None:
    randomize_through_pages(ivan, "P-001", START)  # its first kit is requested, not prepared
    page = ivan.get("/participants").text
    headers = re.findall(r'<th scope="col">([^<]*)</th>', page)
    assert "Visits done" not in headers
    column = headers.index("Visits with a kit issued")
    row = page[page.index('<th scope="row"><a href="/participants/P-001">') :]
    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row[: row.index("</tr>")])
    assert cells[column] == "1" and "(visit 1, requested)" in cells[-3]
    assert "whether or not the pharmacy has prepared it yet" in text_of(page)


def test_a_kit_request_outside_the_window_needs_a_reason(
    ivan: Browser, trial_with_list: TrialFiles
) -> None:
    randomize_through_pages(ivan, "P-001", START)
    page = ivan.get("/participants/P-001")
    first, last = START + timedelta(days=77), START + timedelta(days=91)
    assert f"{first.isoformat()} to {last.isoformat()}" in page.text
    refused = ivan.post("/participants/P-001/kits", {"visit": "2", "date": ""})
    assert refused.status_code == 409
    assert "is outside the window of visit 2" in text_of(refused.text)
    assert 'id="override_reason-error"' in refused.text
    done = ivan.post(
        "/participants/P-001/kits", {"visit": "2", "date": "", "override_reason": "travel"}
    )
    assert done.status_code == 303 and done.headers["location"] == "/participants/P-001?requested=2"
    shown = ivan.follow()
    assert f'<p class="code-big">{live_kit(trial_with_list, "P-001", 2)}</p>' in shown.text


def test_a_mistyped_kit_code_is_named_as_a_typo(ivan: Browser, trial_with_list: TrialFiles) -> None:
    randomize_through_pages(ivan, "P-001", START)
    kit = live_kit(trial_with_list, "P-001", 1)
    typo = kit[:-1] + ("0" if kit[-1] != "0" else "2")
    ivan.get("/kits/replace")
    page = ivan.post("/kits/replace", {"code": typo.lower(), "reason": "dropped"})
    assert page.status_code == 400
    assert "fails its check character: probably a typo" in text_of(page.text)
    assert 'id="code-error"' in page.text


def test_replacing_a_kit_shows_the_new_kit(ivan: Browser, trial_with_list: TrialFiles) -> None:
    randomize_through_pages(ivan, "P-001", START)
    kit = live_kit(trial_with_list, "P-001", 1)
    ivan.get("/kits/replace")
    done = ivan.post("/kits/replace", {"code": kit.lower(), "reason": "bag damaged"})
    assert done.status_code == 303 and done.headers["location"] == "/participants/P-001?replaced=1"
    page = ivan.follow()
    new = live_kit(trial_with_list, "P-001", 1)
    assert new != kit and f'<p class="code-big">{new}</p>' in page.text
    assert f"{kit} (voided" in page.text


def test_emergency_unblinding_confirms_shows_the_arm_once_and_marks_the_participant(
    ivan: Browser, trial_with_list: TrialFiles
) -> None:
    randomize_through_pages(ivan, "P-001", START)
    ivan.get("/unblind", participant="P-001")
    refused = ivan.post("/unblind/confirm", {"participant": "P-001", "reason": "anaphylaxis"})
    assert "Break the code for participant <strong>P-001</strong>?" in refused.text
    assert "unblind.emergency" not in _actions(trial_with_list)
    shown = ivan.post("/unblind", ivan.signed(ivan.hidden("/unblind")))
    assert shown.status_code == 200
    assert shown.headers["Cache-Control"] == "no-store"
    arm = participant_arms(trial_with_list)["P-001"]
    assert f"({arm})" in shown.text
    assert "unblind.emergency" in _actions(trial_with_list)
    page = ivan.get("/participants/P-001")
    assert "Unblinded" in page.text and arm_words_in(page.text) == []


def test_emergency_unblinding_needs_a_reason(ivan: Browser, trial_with_list: TrialFiles) -> None:
    randomize_through_pages(ivan, "P-001", START)
    ivan.get("/unblind")
    page = ivan.post("/unblind", ivan.signed({"participant": "P-001", "reason": "  "}))
    assert page.status_code == 400
    assert "a reason is required to break the code: say why" in text_of(page.text)
    assert 'id="reason-error"' in page.text
    assert "unblind.emergency" not in _actions(trial_with_list)


def test_an_expired_session_keeps_what_was_typed_through_a_new_login(
    ivan: Browser, clock: Clock, trial_with_list: TrialFiles
) -> None:
    ivan.get("/randomize")
    clock.now += sessions.IDLE_TIMEOUT + timedelta(seconds=1)
    typed = randomize_form("P-007", START, age="44")
    login = ivan.post("/randomize/confirm", typed)
    assert login.status_code == 401
    assert 'action="/login"' in login.text and "What you typed in the form is kept" in login.text
    kept = ivan.hidden("/login")
    assert kept["keep.participant"] == "P-007" and kept["keep.answer.age"] == "44"
    assert not any(name.startswith("keep.csrf") for name in kept)
    back = ivan.post("/login", {**kept, "user": "ivan", "password": PASSWORDS["ivan"]})
    assert back.status_code == 200
    assert 'value="P-007"' in back.text and 'value="44"' in back.text
    assert "randomize" not in _actions(trial_with_list)
    # the form shown after the new login posts with its own fresh token
    ivan.post("/randomize/confirm", typed)
    assert ivan.last is not None and ivan.last.status_code == 200


@pytest.mark.parametrize(
    "path", ["/pharmacy", "/pharmacy/kits", "/pharmacy/kits.csv", "/users", "/audit"]
)
def test_other_roles_pages_are_refused_with_the_library_message(ivan: Browser, path: str) -> None:
    page = ivan.get(path)
    assert page.status_code == 403
    assert "role investigator may not" in text_of(page.text)
    assert "Traceback" not in page.text


def test_an_expired_session_keeps_a_kit_request_through_a_new_login(
    ivan: Browser, clock: Clock, trial_with_list: TrialFiles
) -> None:
    randomize_through_pages(ivan, "P-001", START)
    page = ivan.get("/participants/P-001")
    assert 'name="page" value="/participants/P-001"' in page.text
    clock.now += sessions.IDLE_TIMEOUT + timedelta(seconds=1)
    typed = {"page": "/participants/P-001", "visit": "2", "override_reason": "travelling"}
    login = ivan.post("/participants/P-001/kits", typed)
    assert login.status_code == 401
    kept = ivan.hidden("/login")
    assert kept["page"] == "/participants/P-001"
    back = ivan.post("/login", {**kept, "user": "ivan", "password": PASSWORDS["ivan"]})
    assert back.status_code == 200
    assert 'value="travelling"' in back.text and "<h1>Participant P-001</h1>" in back.text
    assert "kit.request" not in _actions(trial_with_list)


@pytest.mark.parametrize("page", ["//evil.example/x", "/participants/P-001/../../x", "/logout"])
def test_a_made_up_resume_page_is_ignored(ivan: Browser, page: str) -> None:
    ivan.logout()
    ivan.get("/login")
    response = ivan.post(
        "/login",
        {"user": "ivan", "password": PASSWORDS["ivan"], "page": page, "keep.code": "x"},
    )
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_a_kit_request_posted_twice_issues_one_kit(
    ivan: Browser, trial_with_list: TrialFiles
) -> None:
    randomize_through_pages(ivan, "P-001", START)
    ivan.get("/participants/P-001")
    # the browser sends the same form again, token and all
    fields = {
        "visit": "2",
        "date": (START + timedelta(days=84)).isoformat(),
        "csrf_token": ivan.csrf(),
    }
    first = ivan.post("/participants/P-001/kits", fields)
    second = ivan.post("/participants/P-001/kits", fields)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    requests = [r for r in audit_rows(trial_with_list.db_url) if r["action"] == "kit.request"]
    assert [r["details"].get("repeat", False) for r in requests] == [False, True]
    assert len({r["details"]["kit"] for r in requests}) == 1
