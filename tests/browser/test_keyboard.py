"""Keyboard-only use: logging in and randomizing with the keyboard alone, no mouse, no click."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.support.blinded_path import live_kit
from tests.support.browser import Site, focused, tab_to
from tests.support.exosome import arm_words_in
from tests.support.trial import PASSWORDS

if TYPE_CHECKING:
    from playwright.sync_api import Page

OpenPage = Callable[..., "Page"]


def test_a_randomization_with_the_keyboard_alone(open_page: OpenPage, site: Site) -> None:
    page = open_page()
    page.goto("/login")
    keys = page.keyboard

    tab_to(page, "#user")
    keys.type("ivan")
    tab_to(page, "#password")
    keys.type(PASSWORDS["ivan"])
    with page.expect_navigation():
        keys.press("Enter")

    tab_to(page, "nav a[href='/randomize']")
    with page.expect_navigation():
        keys.press("Enter")

    tab_to(page, "#participant")
    keys.type("P-201")
    tab_to(page, "#site")  # the trial's only site is already chosen
    tab_to(page, "[id='answer.age']")
    keys.type("45")
    # a radio group takes one Tab; Space chooses the focused answer, an arrow key the next one
    tab_to(page, "[id='answer.progressive_ms-yes']")
    keys.press("Space")
    tab_to(page, "[id='answer.edss']")
    keys.type("4.5")
    for criterion in (
        "recent_relapse_or_steroids",
        "other_neuro_autoimmune",
        "infection_malignancy_systemic",
    ):
        tab_to(page, f"[id='answer.{criterion}-yes']")
        keys.press("ArrowRight")
        assert focused(page) == f"answer.{criterion}-no"
    tab_to(page, "button[type=submit]:text('Continue')")
    with page.expect_navigation():
        keys.press("Enter")

    assert page.get_by_role("heading", level=1).inner_text() == "Confirm the randomization"
    tab_to(page, "#password")  # the electronic signature: the password typed again
    keys.type(PASSWORDS["ivan"])
    tab_to(page, "button:text('Randomize P-201')")
    with page.expect_navigation():
        keys.press("Enter")

    assert page.url == f"{site.url}/participants/P-201?randomized=1"
    assert page.locator(".code-big").inner_text() == live_kit(site.files, "P-201", 1)
    assert arm_words_in(page.get_by_role("main").inner_text()) == []


def test_the_skip_link_is_the_first_stop_and_moves_to_the_main_content(
    open_page: OpenPage,
) -> None:
    page = open_page("monitor")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to main content"
    assert page.get_by_text("Skip to main content").is_visible()  # shown when focused
    page.keyboard.press("Enter")
    assert focused(page) == "main"
