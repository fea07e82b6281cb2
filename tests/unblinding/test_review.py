"""Second-person review of emergency unblindings (issue 12 item 5), through the CLI.

Every emergency unblinding opens a review item in its own transaction; an admin
or monitor other than the unblinder closes it with a note. ``report`` shows how
many are open, and lists them for the reviewing roles. No review shows an arm.
"""

from __future__ import annotations

import json

import pytest

from tests.support.assertions import assert_error
from tests.support.database import audit_rows, execute
from tests.support.exosome import arm_words_in
from tests.support.trial import Run

REASON = "anaphylaxis after infusion"


@pytest.fixture
def unblinded(run: Run, by_arm: dict[str, str]) -> str:
    """The participant of the first arm, unblinded in an emergency by ivan."""
    participant = by_arm[sorted(by_arm)[0]]
    run.ok("unblind", "emergency", participant, "--reason", REASON, user="ivan")
    return participant


def _open_id(run: Run) -> int:
    [item] = json.loads(run.ok("unblind", "review", "list", "--json", user="mona").stdout)
    return int(item["id"])


def test_the_unblinding_opens_a_review_in_its_own_transaction(run: Run, unblinded: str) -> None:
    [item] = json.loads(run.ok("unblind", "review", "list", "--json", user="alice").stdout)
    [event] = [e for e in audit_rows(run.files.db_url) if e["action"] == "unblind.emergency"]
    assert (item["participant"], item["unblinded_by"], item["reason"], item["status"]) == (
        unblinded,
        "ivan",
        REASON,
        "open",
    )
    assert item["unblinded_at"] == event["at"]
    assert execute(run.files.db_url, "SELECT audit_seq FROM unblinding_reviews") == [
        (event["seq"],)
    ]
    assert arm_words_in(json.dumps(item)) == []


@pytest.mark.parametrize("reviewer", ["alice", "ivan"])
def test_the_reviewer_cannot_be_the_unblinder(
    run: Run, by_arm: dict[str, str], reviewer: str
) -> None:
    participant = by_arm[sorted(by_arm)[0]]
    unblinder = "alice"  # only an admin both unblinds and reviews
    run.ok("unblind", "emergency", participant, "--reason", REASON, user=unblinder)
    review = _open_id(run)
    result = run("unblind", "review", "close", str(review), "--note", "fine", user=reviewer)
    expected = (
        f"user alice made unblinding {review} of {participant} and may not review it: "
        "another admin or monitor closes it"
        if reviewer == unblinder
        else "role investigator may not review emergency unblindings"
    )
    assert assert_error(result, 1) == expected
    assert execute(run.files.db_url, "SELECT closed_at, closed_by FROM unblinding_reviews") == [
        (None, None)
    ]
    closed = run.ok(
        "unblind", "review", "close", str(review), "--note", "site called back", user="mona"
    )
    assert closed.stdout.startswith(f"Review {review} of the unblinding of {participant} closed")


def test_report_lists_open_reviews_for_reviewers_only(run: Run, unblinded: str) -> None:
    for user in ("mona", "alice"):
        text = run.ok("report", user=user).stdout
        assert "Emergency unblindings awaiting second-person review: 1" in text
        assert REASON in text and unblinded in text
    investigator = json.loads(run.ok("report", "--json", user="ivan").stdout)
    assert (investigator["open_reviews"], investigator["reviews"]) == (1, [])
    assert REASON not in run.ok("report", user="ivan").stdout
    review = _open_id(run)
    run.ok("unblind", "review", "close", str(review), "--note", "checked", user="mona")
    assert "awaiting second-person review: 0" in run.ok("report", user="mona").stdout


def test_review_commands_refuse_bad_usage(run: Run, unblinded: str) -> None:
    assert_error(run("unblind", "review", "close", "0", "--note", "x", user="mona"), 2)
    assert_error(run("unblind", "review", "close", "1", user="mona"), 2, "--note")
    assert (
        assert_error(run("unblind", "review", "close", "1", "--note", " ", user="mona"), 2)
        == "a note is required to close a review: say what was checked"
    )


def test_an_unknown_review_is_not_found(run: Run, unblinded: str) -> None:
    result = run("unblind", "review", "close", "99", "--note", "checked", user="mona")
    assert assert_error(result, 1) == ("no review item 99 (see 'randomizer unblind review list')")
