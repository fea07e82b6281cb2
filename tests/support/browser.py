"""A real browser for the page tests and the screenshots: Debian's Chromium driven by Playwright.

No browser is ever downloaded: the tests use the system's Chromium
(``apt-get install chromium``, or the path in :data:`CHROMIUM_ENV`), launched
so that it resolves no name but the loopback ones. axe-core comes from npm
(``tests/browser/package.json`` and its lock file, ``npm ci``) and is injected
into the page under test.

This module imports nothing from pytest, so ``scripts/screens.py`` can use it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

    from tests.support.trial import Run, TrialFiles

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""

BROWSER_TESTS = ROOT / "tests" / "browser"
"""Where the browser tests, their package.json and their node_modules are."""

AXE_SCRIPT = BROWSER_TESTS / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core as ``npm ci`` installs it from the lock file."""

CHROMIUM_ENV = "RANDOMIZER_CHROMIUM"
"""The Chromium executable to use instead of the one on PATH."""

REQUIRE_ENV = "RANDOMIZER_REQUIRE_BROWSER"
"""Set to 1 (CI does) to make a missing browser or axe-core a failure instead of a skip."""

INSTALL_HINT = "apt-get install chromium && (cd tests/browser && npm ci)"
"""How to get what the browser tests need."""

LAUNCH_ARGS = (
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
)
"""No GPU, and no name lookup leaves the machine: only the loopback names resolve."""

WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
"""The axe-core rule tags checked: WCAG 2.0 and 2.1, levels A and AA."""


def chromium_path() -> str | None:
    """The Chromium executable: :data:`CHROMIUM_ENV`, else ``chromium`` on PATH."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if Path(configured).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def missing() -> str | None:
    """Why the browser tests cannot run here (one line, saying how to fix it), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[test]'"
    if chromium_path() is None:
        return f"no Chromium on this machine; install it: {INSTALL_HINT}"
    if not AXE_SCRIPT.is_file():
        return f"axe-core is not installed; install it: {INSTALL_HINT}"
    return None


def required() -> bool:
    """Whether a missing browser must fail the run (:data:`REQUIRE_ENV` is set)."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def launch(playwright: Playwright) -> Browser:
    """Headless Chromium from the system, with :data:`LAUNCH_ARGS`."""
    path = chromium_path()
    if path is None:
        raise RuntimeError(f"no Chromium on this machine; install it: {INSTALL_HINT}")
    return playwright.chromium.launch(executable_path=path, args=list(LAUNCH_ARGS))


@dataclass
class Clock:
    """A server clock the tests move forward (session expiry), starting at the real time."""

    offset: timedelta = field(default_factory=timedelta)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self.offset

    def advance(self, by: timedelta) -> None:
        """Move the clock ``by`` forward."""
        with self._lock:
            self.offset += by


@dataclass
class Site:
    """A live server of one trial: its base URL, its files and its movable clock."""

    url: str
    files: TrialFiles
    clock: Clock


def log_in(page: Page, base_url: str, user: str, password: str) -> None:
    """Log in through the login form by typing, as a person would; waits for the first page."""
    page.goto(f"{base_url}/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()


def sign(page: Page, role: str) -> None:
    """Type the role's user's password into a confirmation's electronic signature field."""
    from tests.support.trial import PASSWORDS, USER_OF_ROLE

    page.get_by_label("Password (your electronic signature)").fill(PASSWORDS[USER_OF_ROLE[role]])


def axe_violations(page: Page, tags: tuple[str, ...] = WCAG_TAGS) -> list[dict[str, Any]]:
    """axe-core's violations of ``tags`` on the page as it is now.

    The page's Content-Security-Policy forbids injected script, so the page's
    context must be made with ``bypass_csp=True``.
    """
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE_SCRIPT.read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate(
        "async (tags) => await axe.run(document, "
        "{runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        list(tags),
    )
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def describe_violations(violations: list[dict[str, Any]]) -> str:
    """The violations as short lines: rule, impact, the first few elements' selectors."""
    lines = []
    for violation in violations:
        targets = ", ".join(json.dumps(node["target"]) for node in violation["nodes"][:3])
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']} at {targets}")
    return "\n".join(lines)


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than its viewport (0: no horizontal scrolling)."""
    overflow: int = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return overflow


@contextmanager
def chromium() -> Iterator[Browser]:
    """Playwright and a launched Chromium, both stopped at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def main_text(page: Page) -> str:
    """The visible text of the page's main region, every run of white space one space."""
    return " ".join(page.get_by_role("main").inner_text().split())


def go_to_task(page: Page, title: str) -> None:
    """Follow a link of the task navigation, as a person would."""
    with page.expect_navigation():
        page.get_by_role("navigation", name="Tasks").get_by_role("link", name=title).click()


ELIGIBLE_FORM = {
    "Age in years at screening": "45",
    "Confirmed primary or secondary progressive MS?": "Yes",
    "EDSS score at screening": "4.5",
    "Relapse or corticosteroids within 3 months before screening?": "No",
    "Another significant neurological or autoimmune disorder?": "No",
    "Active infection, malignancy or uncontrolled systemic disease?": "No",
}
"""The exosome-ms questions as the randomize page asks them, with eligible answers."""


def fill_randomize_form(page: Page, participant: str, on: str = "", **changed: str) -> None:
    """Fill the randomize form with eligible answers (``changed`` replaces some, by question)."""
    page.get_by_label("Participant id").fill(participant)
    for question, answer in {**ELIGIBLE_FORM, **changed}.items():
        if answer in ("Yes", "No"):
            page.get_by_role("group", name=question).get_by_label(answer).check()
        else:
            page.get_by_label(question).fill(answer)
    page.get_by_label("Date of randomization").fill(on)


def tab_to(page: Page, selector: str, limit: int = 80) -> None:
    """Press Tab until the element ``selector`` has the focus (only Tab is pressed)."""
    target = page.locator(selector)
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"{selector} is not reached with Tab ({limit} presses)")


def focused(page: Page) -> str:
    """The id of the element that has the focus ("" if it has none)."""
    found: str = page.evaluate("() => document.activeElement ? document.activeElement.id : ''")
    return found


@dataclass(frozen=True)
class Stop:
    """One page of a role's tour: its name (for files and messages) and how to reach it."""

    name: str
    reach: Callable[[Page], None]


@dataclass(frozen=True)
class TourTrial:
    """What the tour's trial holds besides its users and list (see :func:`prepare_tour`)."""

    participant: str
    """Randomized, with its visit-1 kit requested and not prepared."""
    requested_kit: str
    prepared_kit: str
    """The visit-1 kit of a second participant, prepared."""
    unblinded: str
    """A third participant, unblinded in an emergency: their review is open."""


def prepare_tour(run: Run) -> TourTrial:
    """Give a trial with its list three randomized participants, one kit prepared and one
    emergency unblinding whose review is open (via the CLI)."""
    from tests.support.blinded_path import days_ago, live_kit, randomize

    randomize(run, "P-001", days_ago(2))
    randomize(run, "P-002", days_ago(1))
    prepared = live_kit(run.files, "P-002", 1)
    run.ok("pharmacy", "prepare", prepared, user="petra")
    randomize(run, "P-003", days_ago(1))
    run.ok("unblind", "emergency", "P-003", "--reason", "severe reaction", user="ivan")
    return TourTrial("P-001", live_kit(run.files, "P-001", 1), prepared, "P-003")


def _open(path: str) -> Callable[[Page], None]:
    def reach(page: Page) -> None:
        page.goto(path)

    return reach


def _submit(
    path: str, button: str, fill: Callable[[Page], None] | None = None
) -> Callable[[Page], None]:
    def reach(page: Page) -> None:
        page.goto(path)
        if fill is not None:
            fill(page)
        with page.expect_navigation():
            page.get_by_role("button", name=button).click()

    return reach


def _randomize_ineligible(page: Page) -> None:
    """Randomize a participant too young to be eligible: the refusal with its field errors."""
    page.goto("/randomize")
    fill_randomize_form(page, "P-301", **{"Age in years at screening": "17"})
    with page.expect_navigation():
        page.get_by_role("button", name="Continue").click()
    confirm = page.get_by_role("button", name="Randomize P-301")
    if confirm.count():
        with page.expect_navigation():
            confirm.click()


def _wrong_password(page: Page) -> None:
    page.get_by_label("User name").fill("ivan")
    page.get_by_label("Password").fill("not the password")


def _unblind_form(trial: TourTrial) -> Callable[[Page], None]:
    def fill(page: Page) -> None:
        page.get_by_label("Participant id").fill(trial.participant)
        page.get_by_label("Reason").fill("severe reaction; her care needs the arm")

    return fill


def page_name(path: str) -> str:
    """A page's name for files: ``/pharmacy/lookup`` is ``pharmacy-lookup``, ``/`` is ``home``."""
    return path.strip("/").replace("/", "-").replace(".", "-") or "home"


def tour(role: str | None, trial: TourTrial, locked: bool = False) -> list[Stop]:
    """Every page a role sees, in states worth seeing: its tasks, their results, its errors.

    ``None`` is a visitor who is not logged in. A tour changes the trial only
    where a page's own form does (the pharmacist prepares the requested kit).
    """
    from randomizer.server.pages import TASKS

    if role is None:
        return [
            Stop("login", _open("/login")),
            Stop("login-error", _submit("/login", "Log in", _wrong_password)),
            Stop("not-found", _open("/no/such/page")),
        ]
    stops = [Stop("home", _open("/"))]
    stops += [Stop(page_name(task.path), _open(task.path)) for task in TASKS[role]]
    if role == "investigator":
        stops += [
            Stop("randomize-empty", _submit("/randomize", "Continue")),
            Stop("randomize-errors", _randomize_ineligible),
            Stop(
                "randomize-confirm",
                _submit("/randomize", "Continue", lambda page: fill_randomize_form(page, "P-300")),
            ),
            Stop("participant", _open(f"/participants/{trial.participant}")),
            Stop("unblind-confirm", _submit("/unblind", "Continue", _unblind_form(trial))),
        ]
    if role == "pharmacist":
        stops += [
            Stop("pharmacy-label", _open(f"/pharmacy/label/{trial.prepared_kit}")),
            Stop("pharmacy-lookup-kit", _open(f"/pharmacy/lookup?code={trial.requested_kit}")),
            Stop(
                "pharmacy-prepared",
                _submit(
                    f"/pharmacy/lookup?code={trial.requested_kit}",
                    f"Prepare kit {trial.requested_kit} and record it",
                ),
            ),
        ]
    if role in ("monitor", "admin"):
        stops += [Stop("verify-result", _submit("/verify", "Verify"))]
    if role in ("monitor", "admin"):
        stops += [
            Stop("reviews-all", _open("/reviews?show=all")),
            Stop("reviews-errors", _submit("/reviews", "Close review 1")),
        ]
    if role == "admin":
        stops += [
            Stop("users-errors", _submit("/users", "Add the user")),
            Stop("participant-void", _open(f"/participants/{trial.participant}/void")),
            Stop(
                "participant-void-errors",
                _submit(
                    f"/participants/{trial.participant}/void",
                    f"Void the randomization of {trial.participant}",
                ),
            ),
        ]
        if not locked:
            stops += [Stop("lock-errors", _submit("/lock", "Lock the database"))]
    if role == "statistician" and locked:
        stops += [Stop("list-verify-result", _submit("/list/verify", "Verify the list"))]
    return stops


_WATCH_FOCUS = """() => {
    const selector = 'a[href], button, input:not([type=hidden]), select, textarea, '
        + '[tabindex]:not([tabindex="-1"])';
    const controls = [...document.querySelectorAll(selector)]
        .filter(element => !element.disabled && element.getClientRects().length > 0);
    window.tabControls = controls;
    window.tabReached = new Set();
    document.addEventListener('focusin', event => {
        const index = controls.indexOf(event.target);
        if (index >= 0) window.tabReached.add(index);
    });
    return controls.length;
}"""

_NOT_REACHED = """() => {
    const controls = window.tabControls;
    const reached = window.tabReached;
    const groups = new Set([...reached].map(index => controls[index])
        .filter(element => element.type === 'radio').map(element => element.name));
    return controls
        .filter((element, index) => !reached.has(index)
            && !(element.type === 'radio' && groups.has(element.name)))
        .map(element => element.outerHTML.slice(0, 100));
}"""


def not_reached_with_tab(page: Page) -> list[str]:
    """The page's links, buttons and fields that pressing Tab never reaches (a radio group
    counts as reached when one of its radios is: arrow keys move within it)."""
    count: int = page.evaluate(_WATCH_FOCUS)
    for _ in range(count + 5):  # a full round, and the browser's own stops in between
        page.keyboard.press("Tab")
    missed: list[str] = page.evaluate(_NOT_REACHED)
    return missed
