"""axe-core finds no WCAG 2.1 A or AA fault on any page of any role; the pages reflow and Tab
reaches every control.

Every page of each role's tour (its tasks, their results, their error
states) is checked in a context that bypasses the Content-Security-Policy,
which would otherwise block the injected axe-core (test_sessions.py checks
that the policy is enforced everywhere else). The reflow check looks at the
same pages on a 320 CSS pixel wide screen (1280 pixels at 400% zoom) and at
200% zoom of a 1280x800 window: no page needs scrolling sideways.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.support.browser import (
    Site,
    TourTrial,
    axe_violations,
    describe_violations,
    horizontal_overflow,
    not_reached_with_tab,
    prepare_tour,
    tour,
)
from tests.support.trial import Run

if TYPE_CHECKING:
    from playwright.sync_api import Page

OpenPage = Callable[..., "Page"]

ROLES = (None, "investigator", "pharmacist", "monitor", "statistician", "admin")

WIDTHS = {"narrow": 320, "zoom-200": 640}
"""CSS pixel widths: a narrow phone (1280 pixels at 400% zoom), and a 1280 pixel wide window
at 200% zoom (zoom halves the CSS pixels a window has)."""


@pytest.fixture
def tour_trial(site: Site) -> TourTrial:
    """The site's trial with the participants and kits the tour shows."""
    return prepare_tour(Run(site.files))


def _lock(site: Site) -> None:
    Run(site.files).ok("lock", "--reason", "last visit done", user="alice")


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role or "logged-out")
def test_axe_core_finds_no_wcag_fault(
    open_page: OpenPage, site: Site, tour_trial: TourTrial, role: str | None
) -> None:
    page = open_page(role, bypass_csp=True)
    faults = {}
    for stop in tour(role, tour_trial):
        stop.reach(page)
        found = axe_violations(page)
        if found:
            faults[stop.name] = describe_violations(found)
    assert faults == {}


def test_axe_core_finds_no_wcag_fault_after_the_lock(
    open_page: OpenPage, site: Site, tour_trial: TourTrial
) -> None:
    _lock(site)
    faults = {}
    for role in ("statistician", "admin"):
        page = open_page(role, bypass_csp=True)
        for stop in tour(role, tour_trial, locked=True):
            stop.reach(page)
            found = axe_violations(page)
            if found:
                faults[f"{role} {stop.name}"] = describe_violations(found)
    assert faults == {}


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role or "logged-out")
def test_no_page_scrolls_sideways(
    open_page: OpenPage, site: Site, tour_trial: TourTrial, role: str | None
) -> None:
    page = open_page(role)
    wider = {}
    for stop in tour(role, tour_trial):
        stop.reach(page)
        for screen, width in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": 640})
            overflow = horizontal_overflow(page)
            if overflow > 0:
                wider[f"{stop.name} {screen}"] = overflow
        page.set_viewport_size({"width": 1280, "height": 720})
    assert wider == {}


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role or "logged-out")
def test_every_link_button_and_field_is_reached_with_tab(
    open_page: OpenPage, site: Site, tour_trial: TourTrial, role: str | None
) -> None:
    page = open_page(role)
    missed = {}
    for stop in tour(role, tour_trial):
        stop.reach(page)
        not_reached = not_reached_with_tab(page)
        if not_reached:
            missed[stop.name] = not_reached
    assert missed == {}
