"""The browser harness itself: no outside name lookup, and an axe-core that does find faults.

Were axe-core not really running, every page would look clean; were the
browser free to resolve names, a page could reach outside the machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.support.browser import axe_violations

if TYPE_CHECKING:
    from playwright.sync_api import Browser

FAULTY_PAGE = (
    "<!doctype html><html><head><title>faulty</title></head><body>"
    '<main><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="><input type="text"></main>'
    "</body></html>"
)
"""A page with no language, an image without text and a field without a label."""


def test_the_browser_resolves_no_outside_name(chromium: Browser) -> None:
    from playwright.sync_api import Error

    context = chromium.new_context()
    try:
        page = context.new_page()
        with pytest.raises(Error) as refused:
            page.goto("http://example.com/", timeout=15_000)
        assert "ERR_NAME_NOT_RESOLVED" in str(refused.value)
    finally:
        context.close()


def test_axe_core_reports_the_faults_of_a_faulty_page(chromium: Browser) -> None:
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_content(FAULTY_PAGE)
        found = {violation["id"] for violation in axe_violations(page)}
        assert {"html-has-lang", "image-alt", "label"} <= found
    finally:
        context.close()
