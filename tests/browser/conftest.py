"""Fixtures of the browser tests: one Chromium per run, a live server per test, logged-in pages.

Without Chromium (or Playwright, or axe-core) these tests are skipped with a
one-line reason saying how to install it, unless RANDOMIZER_REQUIRE_BROWSER=1
(CI sets it), which turns that into a failure. They run on SQLite only: what
they check is the pages, and the Backend under the pages runs the same
contract suite on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.backends.live import live_server
from tests.support import browser as support
from tests.support.browser import Clock, Site
from tests.support.database import postgres_url
from tests.support.trial import PASSWORDS, USER_OF_ROLE, TrialFiles

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip every browser test with one reason (one line in the summary) when the browser is
    missing; fail them instead when RANDOMIZER_REQUIRE_BROWSER is set."""
    if postgres_url() is not None:
        pytest.skip("the browser tests run on SQLite only (the pages are the same on both)")
    reason = support.missing()
    if reason is not None:
        if support.required():
            pytest.fail(f"{support.REQUIRE_ENV} is set and {reason}", pytrace=False)
        pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    """The system's Chromium, launched once for the browser tests.

    Stopped when they end: Playwright's synchronous API holds an asyncio loop
    in the main thread while it runs, which the in-process test clients of
    the other tests cannot share.
    """
    with support.chromium() as browser:
        yield browser


@pytest.fixture
def site(chromium: Browser, trial_with_list: TrialFiles) -> Iterator[Site]:
    """The trial with its users and list, served on a loopback port with a clock to move."""
    clock = Clock()
    with live_server(trial_with_list.db_url, trial_with_list.key_file, clock) as url:
        yield Site(url, trial_with_list, clock)


@pytest.fixture
def open_page(chromium: Browser, site: Site) -> Iterator[Callable[..., Page]]:
    """A factory of pages, each in a browser context of its own (its own cookies).

    ``open_page()`` is logged out; ``open_page("pharmacist")`` is logged in as
    that role's user by typing into the login form. Keyword arguments go to
    ``new_context`` (``bypass_csp=True`` for axe-core, ``viewport=...``).
    """
    contexts = []

    def new(role: str | None = None, **options: Any) -> Page:
        context = chromium.new_context(base_url=site.url, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(5_000)
        if role is not None:
            user = USER_OF_ROLE[role]
            support.log_in(page, site.url, user, PASSWORDS[user])
        return page

    yield new
    for context in contexts:
        context.close()
