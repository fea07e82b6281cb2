"""Blinding in the pages: no page a blinded role reaches names an arm or differs by arm.

The CLI's leak tests (tests/test_blinding_leaks.py) run here over HTML: every
page an investigator, a monitor or a statistician can reach, or is refused, is
fetched, and its body, title, form values, redirect and cookies are checked for
arm ids and labels. Then each action on a participant is done for a
participant of each arm and the two responses are compared once participant
ids, kit codes, randomization numbers and one-time tokens are masked: the same
status, the same redirect, the same page to the byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from tests.support.blinded_path import FOUR_DAY0, anonymous, live_kit, participant_arms
from tests.support.exosome import DESIGN, arm_words_in
from tests.support.trial import Run
from tests.support.web import Browser, logged_in, randomize_form, text_of


def on(offset: int) -> str:
    return (FOUR_DAY0 + timedelta(days=offset)).isoformat()


def _everything(response: httpx.Response) -> str:
    """What a response shows a browser: status, headers (cookies, redirect) and body."""
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    return f"{response.status_code}\n{headers}\n\n{response.text}"


def _assert_no_arm(response: httpx.Response, what: str) -> None:
    assert "Traceback" not in response.text, what
    assert arm_words_in(_everything(response)) == [], (what, arm_words_in(_everything(response)))


# every page a blinded role reaches -------------------------------------------------------

Step = tuple[str, str, Callable[[dict[str, str]], dict[str, str]] | None]
"""(method, path with {first}/{kit} placeholders, form builder or None for a GET)."""

SIGNING = frozenset({"/randomize", "/unblind", "/lock", "/unblinding", "/list/approve"})
"""The forms posted with the user's electronic signature (unless the form gives a password)."""


def _sign(b: Browser, target: str, data: dict[str, str]) -> dict[str, str]:
    """A signing form's fields with the user's password, unless the step typed its own."""
    path = target.partition("?")[0]
    if (path in SIGNING or path.endswith("/void")) and "password" not in data:
        return b.signed(data)
    return data


INVESTIGATOR_STEPS: list[Step] = [
    ("GET", "/", None),
    ("GET", "/randomize", None),
    ("POST", "/randomize/confirm", lambda f: randomize_form("P-101", FOUR_DAY0)),
    ("POST", "/randomize", lambda f: randomize_form("P-101", FOUR_DAY0)),
    ("POST", "/randomize", lambda f: randomize_form("P-101", FOUR_DAY0)),
    ("POST", "/randomize", lambda f: randomize_form("P-102", FOUR_DAY0, edss="9")),
    ("POST", "/randomize", lambda f: randomize_form("P-103", FOUR_DAY0, age="abc")),
    ("POST", "/randomize", lambda f: {**randomize_form("P-104", FOUR_DAY0), "password": "wrong"}),
    ("GET", "/participants", None),
    ("GET", "/participants/{first}", None),
    ("GET", "/participants/P-101?randomized=1", None),
    ("GET", "/participants/P-404", None),
    ("POST", "/participants/{first}/kits", lambda f: {"visit": "2", "date": on(95)}),
    (
        "POST",
        "/participants/{first}/kits",
        lambda f: {"visit": "2", "date": on(95), "override_reason": "hospitalised"},
    ),
    ("GET", "/participants/{first}?requested=2", None),
    ("POST", "/participants/{first}/kits", lambda f: {"visit": "9"}),
    ("GET", "/kits/replace", None),
    ("POST", "/kits/replace", lambda f: {"code": f["kit"], "reason": "dropped"}),
    ("POST", "/kits/replace", lambda f: {"code": f["kit"], "reason": "dropped"}),
    ("POST", "/kits/replace", lambda f: {"code": "0000-0001", "reason": "dropped"}),
    ("GET", "/unblind", None),
    ("POST", "/unblind/confirm", lambda f: {"participant": f["first"], "reason": "curious"}),
    ("POST", "/unblind", lambda f: {"participant": f["first"], "reason": " "}),
    (
        "POST",
        "/unblind",
        lambda f: {"participant": f["first"], "reason": "curious", "password": "wrong"},
    ),
    ("GET", "/report", None),
    ("GET", "/pharmacy", None),
    ("GET", "/pharmacy/kits", None),
    ("GET", "/pharmacy/kits.csv", None),
    ("GET", "/pharmacy/lookup?code={kit}", None),
    ("GET", "/pharmacy/label/{kit}", None),
    ("POST", "/pharmacy/prepare", lambda f: {"code": f["kit"]}),
    ("GET", "/audit", None),
    ("POST", "/verify", lambda f: {}),
    ("GET", "/users", None),
    ("GET", "/list", None),
    ("POST", "/list/verify", lambda f: {}),
    ("POST", "/unblinding", lambda f: {}),
    ("GET", "/no/such/page", None),
    ("GET", "/reviews", None),
    ("POST", "/reviews/1/close", lambda f: {"note": "seen"}),
    ("GET", "/list/approve", None),
    ("POST", "/list/approve", lambda f: {}),
    ("GET", "/participants/{first}/void", None),
    ("POST", "/participants/{first}/void", lambda f: {"reason": "mistake"}),
]

MONITOR_STEPS: list[Step] = [
    ("GET", "/", None),
    ("GET", "/report", None),
    ("GET", "/audit", None),
    ("GET", "/audit?action=randomize", None),
    ("GET", "/audit?subject={first}", None),
    ("GET", "/verify", None),
    ("POST", "/verify", lambda f: {}),
    ("GET", "/participants", None),
    ("GET", "/participants/{first}", None),
    ("POST", "/unblind", lambda f: {"participant": f["first"], "reason": "curious"}),
    ("GET", "/pharmacy/kits", None),
    ("GET", "/pharmacy/lookup?code={kit}", None),
    ("POST", "/unblinding", lambda f: {}),
    ("POST", "/list/verify", lambda f: {}),
    ("GET", "/reviews", None),
    ("GET", "/reviews?show=all", None),
    ("POST", "/reviews/1/close", lambda f: {"note": "checked"}),
    ("GET", "/list/approve", None),
    ("POST", "/list/approve", lambda f: {}),
    ("POST", "/participants/{first}/void", lambda f: {"reason": "mistake"}),
]

STATISTICIAN_STEPS: list[Step] = [
    ("GET", "/", None),
    ("GET", "/report", None),
    ("GET", "/unblinding", None),
    ("POST", "/unblinding", lambda f: {}),
    ("GET", "/list/verify", None),
    ("POST", "/list/verify", lambda f: {}),
    ("GET", "/audit", None),
    ("GET", "/participants", None),
    ("GET", "/pharmacy/kits.csv", None),
    ("POST", "/unblind", lambda f: {"participant": f["first"], "reason": "curious"}),
    ("GET", "/list/approve", None),
    ("POST", "/list/approve", lambda f: {}),
    ("GET", "/reviews", None),
]


@dataclass
class Visit:
    """One step done and what it showed."""

    step: str
    response: httpx.Response


def _walk(b: Browser, steps: list[Step], facts: dict[str, str]) -> list[Visit]:
    seen = []
    for method, path, form in steps:
        target = path.format(**facts)
        if method == "GET":
            response = b.get(target)
        else:
            assert form is not None
            b.get("/")
            response = b.post(target, _sign(b, target, form(facts)))
        seen.append(Visit(f"{method} {target}", response))
        if response.status_code in (302, 303):
            seen.append(Visit(f"GET {response.headers['location']}", b.follow()))
    return seen


@pytest.mark.parametrize(
    ("user", "steps"),
    [
        pytest.param("ivan", INVESTIGATOR_STEPS, id="investigator"),
        pytest.param("mona", MONITOR_STEPS, id="monitor"),
        pytest.param("stan", STATISTICIAN_STEPS, id="statistician"),
    ],
)
def test_no_page_a_blinded_role_reaches_names_an_arm(
    pages: Callable[[], Browser], run: Run, by_arm: dict[str, str], user: str, steps: list[Step]
) -> None:
    first = sorted(by_arm.values())[0]
    facts = {"first": first, "kit": live_kit(run.files, first, 1)}
    visits = _walk(logged_in(pages, user), steps, facts)
    assert len(visits) >= len(steps)
    for visit in visits:
        _assert_no_arm(visit.response, f"{user}: {visit.step}")
    statuses = {v.step: v.response.status_code for v in visits}
    assert 200 in statuses.values() and 403 in statuses.values(), statuses


def test_the_leak_check_sees_arms_in_an_unblinded_page(
    pages: Callable[[], Browser], run: Run, by_arm: dict[str, str]
) -> None:
    petra = logged_in(pages, "petra")
    listing = petra.get("/pharmacy/kits")
    assert set(arm_words_in(listing.text)) >= {arm.label.lower() for arm in DESIGN.arms}
    ivan = logged_in(pages, "ivan")
    participant = by_arm[DESIGN.arm_ids[0]]
    ivan.get("/unblind")
    shown = ivan.post(
        "/unblind", ivan.signed({"participant": participant, "reason": "anaphylaxis"})
    )
    assert shown.status_code == 200 and arm_words_in(shown.text) != []
    assert shown.headers["Cache-Control"] == "no-store"
    assert participant_arms(run.files)[participant] == DESIGN.arm_ids[0]


# the same page, whatever the arm -------------------------------------------------------

_ONE_TIME = re.compile(r"[0-9a-f]{16}\.\d+\.[0-9a-f]{64}")


def _shape(response: httpx.Response) -> str:
    """A response with what may differ between two participants masked."""
    text = _everything(response)
    text = re.sub(r"(?im)^(set-cookie|date|content-length): .*$", r"\1: <masked>", text)
    return anonymous(_ONE_TIME.sub("<once>", text))


ArmStep = tuple[str, str, Callable[[str, Run], dict[str, str]] | None]

PER_ARM: list[tuple[str, ArmStep]] = [
    ("participant page", ("GET", "/participants/{p}", None)),
    ("randomize again", ("POST", "/randomize", lambda p, r: randomize_form(p, FOUR_DAY0))),
    (
        "ineligible again",
        ("POST", "/randomize", lambda p, r: randomize_form(p, FOUR_DAY0, edss="8")),
    ),
    ("out of order", ("POST", "/participants/{p}/kits", lambda p, r: {"visit": "3"})),
    (
        "outside the window",
        ("POST", "/participants/{p}/kits", lambda p, r: {"visit": "2", "date": on(70)}),
    ),
    (
        "kit request",
        ("POST", "/participants/{p}/kits", lambda p, r: {"visit": "2", "date": on(84)}),
    ),
    ("kit shown", ("GET", "/participants/{p}?requested=2", None)),
    (
        "replace",
        (
            "POST",
            "/kits/replace",
            lambda p, r: {"code": live_kit(r.files, p, 2), "reason": "damaged"},
        ),
    ),
    ("replaced kit shown", ("GET", "/participants/{p}?replaced=2", None)),
    ("participant list", ("GET", "/participants", None)),
    (
        "unblinding confirmation",
        ("POST", "/unblind/confirm", lambda p, r: {"participant": p, "reason": "curious"}),
    ),
    ("unblinding without reason", ("POST", "/unblind", lambda p, r: {"participant": p})),
    ("void form", ("GET", "/participants/{p}/void", None)),
    ("void refused", ("POST", "/participants/{p}/void", lambda p, r: {"reason": "mistake"})),
    (
        "unblinding with a wrong signature",
        (
            "POST",
            "/unblind",
            lambda p, r: {"participant": p, "reason": "curious", "password": "not mine"},
        ),
    ),
]


def test_every_action_shows_the_same_page_for_both_arms(
    pages: Callable[[], Browser], run: Run, by_arm: dict[str, str]
) -> None:
    ivan = logged_in(pages, "ivan")
    arms = DESIGN.arm_ids
    for name, (method, path, form) in PER_ARM:
        shown = []
        for arm in arms:
            participant = by_arm[arm]
            target = path.format(p=participant)
            if method == "GET":
                response = ivan.get(target)
            else:
                assert form is not None
                ivan.get("/")
                response = ivan.post(target, _sign(ivan, target, form(participant, run)))
            _assert_no_arm(response, f"{name} ({arm})")
            shown.append(_shape(response))
        if name == "participant list":
            continue  # one page listing both: checked for arms above
        assert shown[0] == shown[1], f"{name}: the page differs between the arms"
    codes = [text_of(ivan.get(f"/participants/{by_arm[a]}").text) for a in arms]
    assert anonymous(codes[0]) == anonymous(codes[1])
