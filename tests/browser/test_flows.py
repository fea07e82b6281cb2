"""Each role's work end to end in a real browser, by clicking and typing as a person would."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.support.blinded_path import KIT_CODE, days_ago, live_kit, participant_arms, randomize
from tests.support.browser import (
    Site,
    fill_randomize_form,
    go_to_task,
    log_in,
    main_text,
    sign,
)
from tests.support.database import execute
from tests.support.exosome import arm_words_in
from tests.support.trial import Run

if TYPE_CHECKING:
    from playwright.sync_api import Page

OpenPage = Callable[..., "Page"]


def test_investigator_randomizes_and_requests_the_next_kit(open_page: OpenPage, site: Site) -> None:
    page = open_page("investigator")
    go_to_task(page, "Randomize")
    # randomized 84 days ago: visit 1 dosed then, today is inside visit 2's window
    fill_randomize_form(page, "p-101", on=days_ago(84).isoformat())
    with page.expect_navigation():
        page.get_by_role("button", name="Continue").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Confirm the randomization"
    assert execute(site.files.db_url, "SELECT count(*) FROM participants") == [(0,)]
    sign(page, "investigator")
    with page.expect_navigation():
        page.get_by_role("button", name="Randomize P-101").click()

    assert page.url == f"{site.url}/participants/P-101?randomized=1"
    assert "Participant P-101 is randomized." in page.get_by_role("status").inner_text()
    first_kit = page.locator(".code-big").inner_text()
    assert first_kit == live_kit(site.files, "P-101", 1)
    assert arm_words_in(main_text(page)) == []

    page.get_by_label("Dosing date").fill("")
    with page.expect_navigation():
        page.get_by_role("button", name="Request the kit").click()
    second = page.get_by_role("region", name="Kit for visit 2")
    second_kit = second.locator(".code-big").inner_text()
    assert KIT_CODE.fullmatch(second_kit) and second_kit != first_kit
    assert second_kit == live_kit(site.files, "P-101", 2)
    assert arm_words_in(main_text(page)) == []


def test_pharmacist_looks_up_a_typed_code_prepares_it_and_opens_the_label(
    open_page: OpenPage, site: Site
) -> None:
    run = Run(site.files)
    randomize(run, "P-001", days_ago(1))
    code = live_kit(site.files, "P-001", 1)
    arm = participant_arms(site.files)["P-001"]

    page = open_page("pharmacist")
    go_to_task(page, "Look up a kit")
    field = page.get_by_label("Kit code")
    field.fill(code.lower().replace("-", " "))  # as typed by hand: case and dashes do not matter
    with page.expect_navigation():
        field.press("Enter")
    assert page.get_by_role("heading", name=f"Kit {code}").is_visible()
    with page.expect_navigation():
        page.get_by_role("button", name=f"Prepare kit {code} and record it").click()
    assert f"The preparation of kit {code} is recorded." in page.get_by_role("status").inner_text()
    assert arm in page.locator(".arm").inner_text()  # the pharmacist is unblinded
    assert execute(site.files.db_url, "SELECT status FROM kits WHERE code = :c", c=code) == [
        ("prepared",)
    ]

    with page.expect_navigation():
        page.get_by_role("link", name="Print the label").click()
    assert page.url == f"{site.url}/pharmacy/label/{code}"
    label = page.get_by_role("region", name="Infusion bag label")
    text = label.inner_text()
    assert code in text and "P-001" in text and "For clinical trial use only" in text
    assert arm_words_in(text) == []  # the bag goes to blinded staff
    drawn = label.locator("svg path").bounding_box()  # the QR code fills its 8rem square
    assert drawn is not None and drawn["width"] > 100, drawn
    page.emulate_media(media="print")
    assert label.is_visible()
    assert not page.get_by_role("navigation", name="Tasks").is_visible()
    assert not page.get_by_text("Print this page").is_visible()


def test_monitor_reads_the_report_and_the_audit_trail(open_page: OpenPage, site: Site) -> None:
    randomize(Run(site.files), "P-001", days_ago(1))
    page = open_page("monitor")
    go_to_task(page, "Report")
    report = main_text(page)
    assert "Randomized 1 of" in report
    assert "Balance by arm is shown only to admins" in report
    assert arm_words_in(report) == []

    go_to_task(page, "Audit trail")
    page.get_by_label("Action").fill("randomize")
    with page.expect_navigation():
        page.get_by_label("Action").press("Enter")
    rows = page.locator("table tbody tr")
    assert rows.count() == 1
    assert "P-001" in rows.first.inner_text() and "ivan" in rows.first.inner_text()
    assert arm_words_in(main_text(page)) == []


def test_statistician_downloads_the_unblinding_after_the_lock(
    open_page: OpenPage, site: Site
) -> None:
    run = Run(site.files)
    randomize(run, "P-001", days_ago(1))
    randomize(run, "P-002", days_ago(1))
    page = open_page("statistician")
    go_to_task(page, "Report")
    assert "Balance by arm is shown only to admins" in main_text(page)

    run.ok("lock", "--reason", "last visit done", user="alice")
    go_to_task(page, "Final unblinding")
    sign(page, "statistician")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the unblinding (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    arms = participant_arms(site.files)
    assert {row["participant"]: row["arm"] for row in rows} == arms

    go_to_task(page, "Report")
    assert page.get_by_role("heading", name="By arm").is_visible()


def test_admin_adds_a_user_and_locks_the_database(open_page: OpenPage, site: Site) -> None:
    page = open_page("admin")
    go_to_task(page, "Users")
    page.get_by_label("User name").fill("nina")
    page.get_by_label("Role").select_option("investigator")
    page.get_by_label("First password").fill("pw-nina-1234567")
    with page.expect_navigation():
        page.get_by_role("button", name="Add the user").click()
    assert page.get_by_role("row", name="nina investigator").count() == 1

    nina = open_page()
    log_in(nina, site.url, "nina", "pw-nina-1234567")
    assert "nina (investigator)" in nina.locator("header").inner_text()

    go_to_task(page, "Lock")
    page.get_by_label("Reason").fill("last participant's last visit done")
    page.get_by_label("I confirm: lock the database; this cannot be undone").check()
    sign(page, "admin")
    with page.expect_navigation():
        page.get_by_role("button", name="Lock the database").click()
    assert "The database is locked." in page.get_by_role("status").inner_text()
    assert execute(site.files.db_url, "SELECT locked_at IS NOT NULL FROM trial") == [(1,)]


def test_an_ineligible_answer_is_shown_next_to_its_question_and_in_the_summary(
    open_page: OpenPage, site: Site
) -> None:
    page = open_page("investigator")
    go_to_task(page, "Randomize")
    fill_randomize_form(page, "P-501", **{"Age in years at screening": "17"})
    with page.expect_navigation():
        page.get_by_role("button", name="Continue").click()
    sign(page, "investigator")
    with page.expect_navigation():
        page.get_by_role("button", name="Randomize P-501").click()

    summary = page.get_by_role("alert")
    assert "There is a problem" in summary.inner_text()
    age = page.get_by_label("Age in years at screening")
    assert age.get_attribute("aria-invalid") == "true"
    described = (age.get_attribute("aria-describedby") or "").split()
    errors = [page.locator(f"[id='{name}']").inner_text() for name in described]
    assert any("must be 18 to 65" in text for text in errors), errors
    assert age.input_value() == "17"  # what was typed stays, to be corrected
    summary.get_by_role("link", name="must be 18 to 65").click()
    assert page.evaluate("() => document.activeElement.id") == "answer.age"
    assert execute(site.files.db_url, "SELECT count(*) FROM participants") == [(0,)]


def test_the_monitor_closes_the_review_of_an_emergency_unblinding(
    open_page: OpenPage, site: Site
) -> None:
    randomize(Run(site.files), "P-001", days_ago(1))
    ivan = open_page("investigator")
    go_to_task(ivan, "Emergency unblinding")
    ivan.get_by_label("Participant id").fill("P-001")
    ivan.get_by_label("Reason").fill("severe reaction; her care needs the arm")
    with ivan.expect_navigation():
        ivan.get_by_role("button", name="Continue").click()
    sign(ivan, "investigator")
    with ivan.expect_navigation():
        ivan.get_by_role("button", name="Break the code").click()
    assert execute(site.files.db_url, "SELECT count(*) FROM unblinding_reviews") == [(1,)]

    page = open_page("monitor")
    go_to_task(page, "Unblinding reviews")
    row = page.get_by_role("row").filter(has_text="P-001")
    assert "ivan" in row.inner_text() and "severe reaction" in row.inner_text()
    assert arm_words_in(main_text(page)) == []
    (review,) = execute(site.files.db_url, "SELECT id FROM unblinding_reviews")
    page.get_by_label(f"Note closing review {review[0]} (P-001)").fill("reason checked with ivan")
    with page.expect_navigation():
        page.get_by_role("button", name=f"Close review {review[0]}").click()
    assert f"Review {review[0]} is closed." in page.get_by_role("status").inner_text()
    assert "No review is open." in main_text(page)
    with page.expect_navigation():
        page.get_by_role("link", name="Show every review").click()
    closed = main_text(page)
    assert "reason checked with ivan" in closed and "by mona" in closed
    assert arm_words_in(closed) == []
    assert execute(
        site.files.db_url,
        "SELECT closed_by, note FROM unblinding_reviews WHERE id = :i",
        i=review[0],
    ) == [("mona", "reason checked with ivan")]
