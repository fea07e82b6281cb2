"""Every page's markup: labelled fields, unique ids, landmarks, a skip link, nothing inline.

A quick structural check over the pages each role reaches; the browser tests
run axe-core over the same pages in Chromium.
"""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser

import pytest

from tests.support.blinded_path import live_kit
from tests.support.trial import Run
from tests.support.web import Browser

PAGES = {
    "ivan": [
        "/",
        "/randomize",
        "/participants",
        "/participants/P-001",
        "/kits/replace",
        "/unblind",
        "/report",
    ],
    "petra": [
        "/",
        "/pharmacy",
        "/pharmacy/lookup",
        "/pharmacy/lookup?code={kit}",
        "/pharmacy/kits",
    ],
    "mona": ["/", "/report", "/audit", "/verify", "/reviews", "/reviews?show=all"],
    "stan": ["/", "/report", "/unblinding", "/list/verify", "/list/approve"],
    "alice": [
        "/",
        "/users",
        "/list",
        "/lock",
        "/audit",
        "/verify",
        "/unblind",
        "/list/approve",
        "/reviews",
        "/participants/P-001",
        "/participants/P-001/void",
    ],
}


class Page(HTMLParser):
    """What the checks need from one page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.labels: set[str] = set()
        self.fields: list[tuple[str, str]] = []
        self.tags: list[str] = []
        self.inline: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if "id" in found:
            self.ids.append(found["id"])
        if tag == "label" and "for" in found:
            self.labels.add(found["for"])
        if tag == "a":
            self.links.append(found.get("href", ""))
        if tag in ("select", "textarea") or (
            tag == "input" and found.get("type") not in ("hidden", "submit")
        ):
            self.fields.append((tag, found.get("id", "")))
        if tag in ("script", "style") or "style" in found:
            self.inline.append(tag)
        self.inline += [k for k in found if k.startswith("on")]


@pytest.mark.parametrize("user", sorted(PAGES))
def test_every_field_is_labelled_and_every_page_has_its_landmarks(
    pages: Callable[[], Browser], run: Run, user: str
) -> None:
    b = pages()
    b.login(user)
    kit = live_kit(run.files, "P-001", 1)
    for path in PAGES[user]:
        response = b.get(path.format(kit=kit))
        assert response.status_code == 200, (path, response.status_code)
        page = Page()
        page.feed(response.text)
        assert page.links[0] == "#main", path  # the skip link comes first
        for landmark in ("header", "nav", "main", "footer"):
            assert page.tags.count(landmark) >= 1, (path, landmark)
        assert page.tags.count("main") == 1 and page.tags.count("h1") == 1, path
        assert len(page.ids) == len(set(page.ids)), (path, page.ids)
        unlabelled = [f for f in page.fields if not f[1] or f[1] not in page.labels]
        assert unlabelled == [], (path, unlabelled)
        assert page.inline == [], (path, page.inline)
