"""The audit trail cannot be forged through its own display (issue 10, item 5).

A failed login records the user name as typed. Printed raw by ``audit show``,
a name such as ``x\\n    99 ... alice(admin) lock exosome-ms`` made a line that
looks like a lock. The text view now prints one line per event, every field a
user could have typed quoted and every character that could break or disguise
a line escaped; names, subjects and reasons are cut to their widths before
they are stored.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from randomizer import audit
from randomizer.audit import AuditEvent
from randomizer.commands.audit import event_line, shown
from randomizer.context import MESSAGE_MAX, load_trial, open_vault
from randomizer.store import Store
from tests.support.assertions import assert_error
from tests.support.database import audit_rows
from tests.support.trial import ADMIN, Run, TrialFiles

WRONG = "wrong-password-123"
FORGED_LINE = "    99 2026-06-01T12:00:00Z alice(admin) lock exosome-ms"

# each breaks a line, moves the cursor or reorders text on some terminal or viewer
BREAKS = [
    "\n",
    "\r",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u2028",
    "\u2029",
    "\x1b[2K\r",
    "\x1b[1A",
    "\u202e",
]


@pytest.mark.parametrize("separator", BREAKS, ids=[repr(b) for b in BREAKS])
def test_a_failed_login_cannot_print_a_forged_event(
    run: Run, trial_with_users: TrialFiles, separator: str
) -> None:
    forged = f"x{separator}{FORGED_LINE}"
    assert len(forged) <= audit.USER_MAX  # stored whole: the display alone must defuse it
    assert_error(run("user", "list", user=forged, password=WRONG), 1, "login refused for user")
    events = audit_rows(trial_with_users.db_url)
    assert events[-1]["user"] == forged  # the trail keeps what was typed

    shown_text = run.ok("audit", "show", user=ADMIN).stdout
    lines = shown_text.split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    # one line per event (the admin's own login is the newest), each starting with its number
    assert len(lines) == len(events) + 1
    assert [line[:7] for line in lines] == [f"{seq:>6} " for seq in range(1, len(lines) + 1)]
    assert all(len(line.splitlines()) == 1 for line in lines)
    forged_line = lines[len(events) - 1]
    assert forged_line.startswith(f"{events[-1]['seq']:>6} ")
    assert f" {shown(forged)}() auth.failed " in forged_line
    assert [line for line in lines if "lock" in line] == [forged_line]
    assert "\x1b" not in shown_text and "\u202e" not in shown_text


def test_long_names_subjects_and_reasons_are_cut_before_they_are_stored(
    run: Run, trial_with_users: TrialFiles
) -> None:
    name = "n" * 1_500  # under the CLI's 2000-character argument limit, over USER_MAX
    message = assert_error(
        run("user", "list", user=name, password=WRONG), 1, "login refused for user"
    )
    assert len(message) < 200
    stored = audit_rows(trial_with_users.db_url)[-1]
    assert stored["user"] == "n" * audit.USER_MAX
    assert stored["details"]["message"] == message

    store = Store(trial_with_users.db_url)
    try:
        with store.transaction() as session:
            vault = open_vault(load_trial(session), trial_with_users.key_file)
            audit.append(
                session,
                vault.audit_key(),
                now=datetime.now(UTC),
                user="u" * 100,
                role="admin",
                action="test.long",
                subject="s" * 1000,
                reason="r" * 5000,
            )
    finally:
        store.dispose()
    event = audit_rows(trial_with_users.db_url)[-1]
    assert (event["user"], event["subject"], event["reason"]) == (
        "u" * audit.USER_MAX,
        "s" * audit.SUBJECT_MAX,
        "r" * audit.REASON_MAX,
    )
    run.ok("audit", "verify", user=ADMIN)  # the MAC covers what was stored
    assert MESSAGE_MAX >= audit.REASON_MAX


def _unsafe(char: str) -> bool:
    return char != " " and unicodedata.category(char) in {
        "Cc",
        "Cf",
        "Cs",
        "Co",
        "Cn",
        "Zl",
        "Zp",
        "Zs",
    }


@given(value=st.text())
def test_a_shown_field_is_one_safe_line_that_reads_back(value: str) -> None:
    text = shown(value)
    assert len(text.splitlines()) == 1
    assert not any(_unsafe(c) for c in text)
    assert json.loads(text) == value


@given(
    user=st.text(),
    subject=st.text(),
    reason=st.text(),
    details=st.dictionaries(st.text(), st.text() | st.integers()),
)
def test_every_event_is_one_line(
    user: str, subject: str, reason: str, details: dict[str, object]
) -> None:
    line = event_line(
        AuditEvent(
            seq=7,
            at="2026-06-01T12:00:00.000000Z",
            user=user,
            role="admin",
            action="refused",
            subject=subject,
            reason=reason,
            details=details,
        )
    )
    assert len(line.splitlines()) == 1
    assert not any(_unsafe(c) for c in line)
    assert line.startswith(
        f"     7 2026-06-01T12:00:00.000000Z {shown(user)}(admin) refused {shown(subject)}"
    )
