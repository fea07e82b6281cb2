"""How the pages show times, audit details and wide tables: readable, nothing cut off."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable

import pytest

from randomizer.server.pages.core import STATIC, detail_pairs, utc_time
from tests.support.blinded_path import live_kit
from tests.support.database import audit_rows
from tests.support.trial import Run
from tests.support.web import Browser, logged_in, text_of

FULL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
"""A time as the library writes it (randomizer.audit.utc_text)."""

SHOWN = re.compile(r'<time datetime="([^"]+)">(\d{4}-\d\d-\d\d \d\d:\d\d) UTC</time>')
"""A time as the pages show it."""


def test_a_time_shows_to_the_minute_in_utc_with_its_full_value_kept() -> None:
    assert utc_time("2026-11-30T11:57:03.933959Z") == (
        '<time datetime="2026-11-30T11:57:03.933959Z">2026-11-30 11:57 UTC</time>'
    )
    assert utc_time("2026-11-30T23:59:00+02:00").endswith(">2026-11-30 21:59 UTC</time>")
    assert utc_time("") == "" and utc_time(None) == ""
    assert utc_time("<b>soon</b>") == "&lt;b&gt;soon&lt;/b&gt;"  # not a time: escaped text


@pytest.mark.parametrize(
    ("user", "path"),
    [
        ("mona", "/audit"),
        ("alice", "/audit"),
        ("alice", "/users"),
        ("alice", "/list"),
        ("petra", "/pharmacy"),
        ("petra", "/pharmacy/kits"),
    ],
)
def test_every_time_on_a_page_is_shown_to_the_minute(
    pages: Callable[[], Browser], user: str, path: str
) -> None:
    page = logged_in(pages, user).get(path)
    assert page.status_code == 200
    shown = SHOWN.findall(page.text)
    assert shown, "no time shown"
    for full, minute in shown:
        assert FULL.fullmatch(full)
        assert full[:16].replace("T", " ") == minute
    without_details = re.sub(r'<td class="details">.*?</td>', "", page.text)
    assert not FULL.search(text_of(without_details)), "a time with microseconds is shown"


def _times_to_the_minute(page: str) -> int:
    """How many times a page shows, each checked to be shown to the minute, never in full."""
    shown = SHOWN.findall(page)
    for full, minute in shown:
        assert full[:16].replace("T", " ") == minute
    assert not FULL.search(text_of(page)), "a time with microseconds is shown"
    return len(shown)


def test_unblinding_review_and_void_times_are_shown_to_the_minute(
    pages: Callable[[], Browser],
) -> None:
    ivan = logged_in(pages, "ivan")
    ivan.get("/unblind")
    ivan.post("/unblind/confirm", {"participant": "P-001", "reason": "anaphylaxis"})
    unblinded = ivan.post("/unblind", ivan.signed(ivan.hidden("/unblind")))
    assert unblinded.status_code == 200
    assert _times_to_the_minute(unblinded.text) == 1
    mona = logged_in(pages, "mona")
    reviews = mona.get("/reviews")
    assert _times_to_the_minute(reviews.text) == 1
    (review,) = re.findall(r'action="/reviews/(\d+)/close"', reviews.text)
    assert mona.post(f"/reviews/{review}/close", {"note": "appropriate"}).status_code == 303
    assert _times_to_the_minute(mona.get("/reviews", show="all").text) == 2
    alice = logged_in(pages, "alice")
    alice.get("/participants/P-002/void")
    voided = alice.post("/participants/P-002/void", alice.signed({"reason": "randomized twice"}))
    assert voided.status_code == 303
    assert _times_to_the_minute(alice.follow().text) == 1


def test_the_kit_lookup_shows_the_request_time_to_the_minute(
    pages: Callable[[], Browser], run: Run
) -> None:
    code = live_kit(run.files, "P-001", 1)
    page = logged_in(pages, "petra").get("/pharmacy/lookup", code=code)
    assert SHOWN.search(page.text)
    assert not FULL.search(text_of(page.text))


def test_the_kit_csv_keeps_full_times(pages: Callable[[], Browser], run: Run) -> None:
    download = logged_in(pages, "petra").get("/pharmacy/kits.csv")
    rows = {r["kit"]: r for r in csv.DictReader(io.StringIO(download.text))}
    assert FULL.fullmatch(rows[live_kit(run.files, "P-001", 1)]["requested_at"])


def test_audit_details_are_wrapping_key_value_lines_never_one_clipped_line(
    pages: Callable[[], Browser], run: Run
) -> None:
    page = logged_in(pages, "mona").get("/audit", action="randomize").text
    event = next(r for r in audit_rows(run.files.db_url) if r["action"] == "randomize")
    cells = re.findall(r'<td class="details"><ul class="pairs">(.*?)</ul></td>', page)
    assert len(cells) == 4
    lines = [html.unescape(line) for line in re.findall(r"<li>(.*?)</li>", cells[0])]
    assert lines == [f"{key}={value}" for key, value in detail_pairs(event["details"])]
    assert len(lines) > 1  # one line per pair
    assert '<div class="table-wrap" role="region" aria-label="Audit events" tabindex="0">' in page
    css = (STATIC / "site.css").read_text()
    assert re.search(r"td\.details \{[^}]*overflow-wrap: anywhere", css)


def test_detail_pairs_show_text_as_it_is_and_the_rest_as_json() -> None:
    assert detail_pairs({"slot": "stays used", "after": {"status": "voided"}, "n": 3}) == [
        ("slot", "stays used"),
        ("after", '{"status": "voided"}'),
        ("n", "3"),
    ]


@pytest.mark.parametrize(
    ("user", "path"),
    [
        ("petra", "/pharmacy/kits"),
        ("petra", "/pharmacy"),
        ("mona", "/audit"),
        ("alice", "/users"),
        ("ivan", "/participants"),
        ("mona", "/reviews"),
    ],
)
def test_table_pages_use_the_wide_column_and_scroll_tables_inside_their_region(
    pages: Callable[[], Browser], user: str, path: str
) -> None:
    page = logged_in(pages, user).get(path).text
    assert '<main id="main" tabindex="-1" class="wide">' in page
    assert page.count("<table") == len(re.findall(r'<div class="table-wrap"[^>]*>\s*<table', page))
    css = (STATIC / "site.css").read_text()
    wide = re.search(r"main\.wide \{ max-width: (\d+)rem; \}", css)
    assert wide and int(wide.group(1)) > 60
    assert re.search(r"\.table-wrap \{ overflow-x: auto;[^}]*\}", css)


def test_form_pages_keep_the_readable_column(pages: Callable[[], Browser]) -> None:
    page = logged_in(pages, "ivan").get("/randomize").text
    assert '<main id="main" tabindex="-1">' in page


def test_a_long_identifier_in_an_error_wraps_instead_of_widening_a_narrow_page(
    pages: Callable[[], Browser],
) -> None:
    ivan = logged_in(pages, "ivan")
    ivan.get("/randomize")
    page = ivan.post("/randomize/confirm", {"page": "/randomize"}).text
    assert 'id="answer.infection_malignancy_systemic-error"' in page  # a 29-letter word
    css = (STATIC / "site.css").read_text()
    assert re.search(r"\.field-error, \.error-summary[^{]*\{ overflow-wrap: anywhere; \}", css)
