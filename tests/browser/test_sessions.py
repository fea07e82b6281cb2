"""Logging in and out in a real browser, the Content-Security-Policy, CSRF and session expiry."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from randomizer.sessions import IDLE_TIMEOUT, INVALID_TOKEN
from tests.support.browser import Site, fill_randomize_form, go_to_task, main_text
from tests.support.database import audit_rows, execute
from tests.support.trial import PASSWORDS

if TYPE_CHECKING:
    from playwright.sync_api import Page

OpenPage = Callable[..., "Page"]

INLINE_SCRIPT_RUNS = """() => {
    const script = document.createElement('script');
    script.textContent = 'window.inlineRan = true';
    document.head.appendChild(script);
    return window.inlineRan === true;
}"""
"""Whether an inline script added to the page runs (the policy forbids it)."""


def test_login_shows_the_role_first_page_and_logout_ends_the_session(
    open_page: OpenPage, site: Site
) -> None:
    page = open_page("pharmacist")
    assert page.url == f"{site.url}/"
    assert page.get_by_role("heading", level=1).inner_text() == "Home"
    assert "petra (pharmacist)" in page.locator("header").inner_text()
    nav = page.get_by_role("navigation", name="Tasks")
    assert nav.get_by_role("link", name="Kits to prepare").is_visible()
    assert nav.get_by_role("link", name="Randomize").count() == 0  # not a pharmacist's task

    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    assert page.url.startswith(f"{site.url}/login")
    assert "You are logged out." in page.locator("main").inner_text()
    page.goto("/")  # the old session no longer opens a page
    assert page.url.startswith(f"{site.url}/login?next=")


def test_a_wrong_password_is_refused_next_to_the_field_and_in_the_summary(
    open_page: OpenPage, site: Site
) -> None:
    page = open_page()
    page.goto("/login")
    page.get_by_label("User name").fill("petra")
    page.get_by_label("Password").fill("not-her-password")
    with page.expect_navigation():
        page.get_by_label("Password").press("Enter")
    summary = page.get_by_role("alert")
    assert "There is a problem" in summary.inner_text()
    field = page.get_by_label("User name")
    assert field.get_attribute("aria-invalid") == "true"
    error_id = page.locator(".field-error").get_attribute("id")
    assert error_id is not None and error_id in (field.get_attribute("aria-describedby") or "")
    assert "__Host-session" not in {cookie["name"] for cookie in page.context.cookies()}


def test_the_content_security_policy_is_enforced(open_page: OpenPage) -> None:
    page = open_page("investigator")
    response = page.goto("/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.evaluate(INLINE_SCRIPT_RUNS) is False
    # the control: the same script runs where the policy is bypassed (as for axe-core)
    bypassed = open_page("investigator", bypass_csp=True)
    assert bypassed.evaluate(INLINE_SCRIPT_RUNS) is True


class _OtherSite(http.server.BaseHTTPRequestHandler):
    """Another site's page with a form that posts to the trial server's logout."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 (the handler's name is http.server's)
        body = (
            "<!doctype html><title>elsewhere</title>"
            f'<form method="post" action="{self.target}">'
            '<input type="hidden" name="csrf_token" value="x">'
            '<button type="submit">Send</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_site(site: Site) -> Iterator[Callable[[str], str]]:
    """Serve another site (``localhost``, not ``127.0.0.1``); ``url_of(path)`` is the form
    page posting to that path of the trial server."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _OtherSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def url_of(path: str) -> str:
        _OtherSite.target = f"{site.url}{path}"
        return f"http://localhost:{server.server_port}/"

    yield url_of
    server.shutdown()
    thread.join(10)
    server.server_close()


def test_a_form_posted_from_another_site_is_refused(
    open_page: OpenPage, site: Site, other_site: Callable[[str], str]
) -> None:
    page = open_page("admin")
    page.goto(other_site("/logout"))
    with page.expect_navigation():
        page.get_by_role("button", name="Send").click()
    assert "refused: this form was sent from another site" in page.locator("main").inner_text()
    page.goto("/")  # still logged in: the cross-site logout did nothing
    assert page.get_by_role("button", name="Log out").is_visible()
    actions = [row["action"] for row in audit_rows(site.files.db_url)]
    assert "auth.logout" not in actions


def test_a_session_idle_past_its_timeout_goes_back_to_the_login_page(
    open_page: OpenPage, site: Site
) -> None:
    page = open_page("monitor")
    site.clock.advance(IDLE_TIMEOUT + timedelta(minutes=1))
    with page.expect_navigation():
        page.get_by_role("navigation", name="Tasks").get_by_role("link", name="Home").click()
    assert page.url == f"{site.url}/login?next=/"
    assert page.get_by_role("heading", level=1).inner_text() == "Log in"


def _confirm_randomization(page: Page, participant: str) -> None:
    go_to_task(page, "Randomize")
    fill_randomize_form(page, participant)
    with page.expect_navigation():
        page.get_by_role("button", name="Continue").click()
    assert page.get_by_role("button", name=f"Randomize {participant}").is_visible()


def test_a_form_with_a_forged_csrf_token_is_refused(open_page: OpenPage, site: Site) -> None:
    page = open_page("investigator")
    _confirm_randomization(page, "P-401")
    forged = "0" * 64
    page.locator("form[action='/randomize'] input[name=csrf_token]").evaluate(
        f"field => field.value = '{forged}'"
    )
    with page.expect_navigation():
        page.get_by_role("button", name="Randomize P-401").click()
    assert "this form was too old to accept" in page.get_by_role("alert").inner_text()
    assert page.get_by_role("heading", level=1).inner_text() == "Log in"
    assert execute(site.files.db_url, "SELECT count(*) FROM participants") == [(0,)]


def test_a_form_sent_after_the_session_expired_is_refused_and_kept_for_after_login(
    open_page: OpenPage, site: Site
) -> None:
    page = open_page("investigator")
    _confirm_randomization(page, "P-402")
    site.clock.advance(IDLE_TIMEOUT + timedelta(minutes=1))
    with page.expect_navigation():
        page.get_by_role("button", name="Randomize P-402").click()
    assert INVALID_TOKEN in page.get_by_role("alert").inner_text()
    assert "What you typed in the form is kept" in main_text(page)
    assert execute(site.files.db_url, "SELECT count(*) FROM participants") == [(0,)]

    page.get_by_label("User name").fill("ivan")
    page.get_by_label("Password").fill(PASSWORDS["ivan"])
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    assert page.get_by_label("Participant id").input_value() == "P-402"
    assert page.get_by_label("Age in years at screening").input_value() == "45"
    assert execute(site.files.db_url, "SELECT count(*) FROM participants") == [(0,)]
