"""Charts on the pages: recruitment and kits for every role, balance only where the table is."""

from __future__ import annotations

import html

import httpx
import pytest

from randomizer.reports import BALANCE_REFUSAL
from tests.support.exosome import answer_args, arm_words_in
from tests.support.trial import Run, TrialFiles
from tests.support.web import Browser, text_of, web_app

ROLES = {"alice": "admin", "ivan": "investigator", "petra": "pharmacist", "stan": "statistician"}
ROLES["mona"] = "monitor"
BLINDED = ("ivan", "mona", "stan", "petra")
REFUSAL = BALANCE_REFUSAL[0].upper() + BALANCE_REFUSAL[1:] + "."


def randomize(run: Run, count: int, first: int = 1) -> None:
    for n in range(first, first + count):
        run.ok("randomize", f"P-{n:03d}", "--site", "WAW", *answer_args(), user="ivan")


def browse(run: Run, user: str, paths: list[str]) -> list[httpx.Response]:
    with web_app(run.files.db_url, run.files.key_file) as make:
        browser: Browser = make()
        browser.login(user)
        return [browser.get(path) for path in paths]


def assert_svg(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.headers["cache-control"] == "no-store"
    assert response.text.startswith("<?xml") and "<svg" in response.text
    assert "style" not in response.text and "<script" not in response.text
    return response.text


@pytest.mark.parametrize("stage", ["empty", "in progress", "locked"])
@pytest.mark.parametrize("user", list(ROLES))
def test_the_report_page_shows_its_charts_and_their_tables(
    run: Run, trial_with_list: TrialFiles, stage: str, user: str
) -> None:
    if stage != "empty":
        randomize(run, 3)
    if stage == "locked":
        run.ok("lock", "--reason", "end of trial", user="alice")
    page, recruitment, kits, balance = browse(
        run,
        user,
        ["/report", "/report/recruitment.svg", "/report/kits.svg", "/report/balance.svg"],
    )
    assert page.status_code == 200
    text = text_of(page.text)
    for image in ("/report/recruitment.svg", "/report/kits.svg"):
        assert f'<img src="{image}" alt="Chart: ' in page.text
    n = 0 if stage == "empty" else 3
    assert f"Recruitment of exosome-ms: {n} of 20 planned (the chart's numbers)" in text
    assert "Kits of exosome-ms per visit (the chart's numbers)" in text
    assert f"Recruitment of exosome-ms: {n} of 20 planned" in assert_svg(recruitment)
    assert "Kits of exosome-ms per visit" in assert_svg(kits)
    shown = user == "alice" or (user == "stan" and stage == "locked")
    if shown:
        assert '<img src="/report/balance.svg"' in page.text
        assert "exosome minus saline" in assert_svg(balance)
        assert REFUSAL not in text
    else:
        assert arm_words_in(page.text) == []
        assert arm_words_in(recruitment.text) == [] and arm_words_in(kits.text) == []
        assert "/report/balance.svg" not in page.text
        assert REFUSAL in text
        assert balance.status_code == 403
        assert BALANCE_REFUSAL in html.unescape(balance.text)
        assert arm_words_in(balance.text) == []


@pytest.mark.parametrize("user", BLINDED)
def test_the_balance_chart_refusal_does_not_move_with_the_arms(
    run: Run, trial_with_list: TrialFiles, user: str
) -> None:
    """The refusal reads the same after each randomization, whichever arm it went to."""
    seen = set()
    for n in range(1, 5):
        randomize(run, 1, first=n)
        (balance,) = browse(run, user, ["/report/balance.svg"])
        assert balance.status_code == 403
        seen.add(text_of(balance.text))
    assert len(seen) == 1


def test_the_pharmacist_sees_kits_per_visit_on_the_kit_list(
    run: Run, trial_with_list: TrialFiles
) -> None:
    randomize(run, 2)
    (page,) = browse(run, "petra", ["/pharmacy/kits"])
    assert page.status_code == 200
    assert '<img src="/report/kits.svg" alt="Chart: ' in page.text
    text = text_of(page.text)
    assert "Kits of exosome-ms per visit (the chart's numbers)" in text
    # visit 1 of two participants requested, none prepared or voided yet
    assert "Week 0 2 0 0" in text, text
