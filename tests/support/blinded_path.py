"""Helpers shared by the tests of the blinded path (issue 4).

Dated randomizations, reading arms as the key holder, refusals that must
change nothing, failing audit writes, and the trial with four participants.
Fixtures stay in conftest.py and the test files; this module holds plain
functions only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from randomizer.sealed import open_allocation
from tests.support.assertions import assert_error, assert_ok, without_cli_hint
from tests.support.database import (
    audit_rows,
    dump_database,
    execute,
    new_events,
    without_audit,
)
from tests.support.exosome import DESIGN, answer_args
from tests.support.trial import Run, TrialFiles, TrialTemplates, build_trial, open_trial_vault

KIT_CODE = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}\b")


def anonymous(text: str) -> str:
    """``text`` with kit codes, participant ids and randomization numbers as placeholders,
    to compare what two participants (one per arm) were shown."""
    text = KIT_CODE.sub("<kit>", text)
    text = re.sub(r"\bP-\d{3}\b", "<participant>", text)
    return re.sub(r"\bR-\d{3}\b", "<number>", text)


def today() -> date:
    """Today's date on the local calendar, as the service counts it."""
    return datetime.now(UTC).astimezone().date()


def days_ago(days: int) -> date:
    """The local date ``days`` before today (negative: in the future)."""
    return today() - timedelta(days=days)


def randomize(run: Run, participant: str, on: date, **overrides: str) -> dict[str, Any]:
    """Randomize an eligible participant as ivan; return the --json result."""
    result = run(
        "randomize",
        participant,
        "--site",
        "WAW",
        *answer_args(**overrides),
        "--date",
        on.isoformat(),
        "--json",
        user="ivan",
    )
    assert_ok(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def participant_arms(files: TrialFiles) -> dict[str, str]:
    """Every randomized participant's arm, read as the key holder from the sealed slots."""
    vault = open_trial_vault(files)
    rows = execute(
        files.db_url,
        "SELECT p.code, st.key, s.sequence, s.allocation_sealed "
        "FROM participants p JOIN slots s ON s.id = p.slot_id "
        "JOIN strata st ON st.id = s.stratum_id",
    )
    return {
        code: open_allocation(vault, key, sequence, bytes(sealed))[0]
        for code, key, sequence, sealed in rows
    }


def live_kit(files: TrialFiles, participant: str, visit: int) -> str:
    """The code of a participant's live (not voided) kit of one visit."""
    rows = execute(
        files.db_url,
        "SELECT k.code FROM kits k JOIN participants p ON p.id = k.participant_id "
        "WHERE p.code = :p AND k.visit = :v AND k.status != 'voided'",
        p=participant,
        v=visit,
    )
    assert len(rows) == 1, rows
    return str(rows[0][0])


def stratum_size(files: TrialFiles) -> int:
    """Slots in the (only) stratum of the generated list."""
    return int(execute(files.db_url, "SELECT size FROM strata WHERE key = 'all'")[0][0])


def normalized(text: str, names: Mapping[str, str]) -> str:
    """``text`` with participant ids, numbers and kit codes replaced by placeholders."""
    for name, placeholder in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(name, placeholder)
    return text


def refused(
    run: Run,
    *args: str,
    user: str,
    code: int,
    fragments: Iterable[str] = (),
    command: str | None = None,
) -> str:
    """Run a command that must be refused and prove that it changed nothing.

    Exit 2 (malformed input) leaves every table as it was, the audit trail
    included; exit 1 (a refusal) adds exactly one audit event, ``refused`` or
    ``screen_failure``, naming the user, the command and the message, and
    changes nothing else. Returns the message after ``Error: ``.
    """
    url = run.files.db_url
    before = dump_database(url)
    events_before = audit_rows(url)
    result = run(*args, user=user)
    message = assert_error(result, code, *fragments)
    assert result.stdout == "", result.stdout
    after = dump_database(url)
    if code == 2:
        assert after == before
        return message
    assert without_audit(after) == without_audit(before)
    added = new_events(events_before, audit_rows(url))
    assert len(added) == 1, added
    assert added[0]["action"] in ("refused", "screen_failure"), added
    assert added[0]["user"] == user
    assert added[0]["details"]["message"] == without_cli_hint(message)
    if command is not None:
        assert added[0]["details"]["command"] == command
    return message


def fail_audit_for(monkeypatch: Any, action: str, error: BaseException) -> list[str]:
    """Make every audit write of ``action`` raise ``error``; returns the actions attempted.

    Patches :func:`randomizer.audit.append`, through which every event is written
    (the action's own and the refusal record after it), so only that one write fails.
    """
    from randomizer import audit

    real = audit.append
    attempted: list[str] = []

    def append(session: Any, key: bytes, **event: Any) -> Any:
        attempted.append(event["action"])
        if event["action"] == action:
            raise error
        return real(session, key, **event)

    monkeypatch.setattr(audit, "append", append)
    return attempted


def one_per_arm(run: Run, on: date, count: int = 4) -> dict[str, str]:
    """Randomize P-001..P-00count; return arm -> the first participant in that arm.

    Four participants always cover both arms of exosome-ms: the first block has
    4 or 6 slots, at most half of them in one arm.
    """
    for n in range(1, count + 1):
        randomize(run, f"P-{n:03d}", on)
    arms = participant_arms(run.files)
    found = {arm: min(p for p, a in arms.items() if a == arm) for arm in set(arms.values())}
    assert set(found) == set(DESIGN.arm_ids), arms
    return found


FOUR_DAY0 = days_ago(300)
"""Randomization day of the four participants of :func:`four_participants`.

Long enough ago that every visit (the last on day 252 +/- 7) is in the past."""


def four_participants(run: Run, templates: TrialTemplates) -> dict[str, str]:
    """The trial with its list and P-001..P-004 randomized on FOUR_DAY0, in ``run``'s files.

    Returns arm -> the first participant in that arm (the ``by_arm`` fixture).
    """

    def build(new: Run) -> dict[str, str]:
        build_trial(new, "list")
        return one_per_arm(new, FOUR_DAY0)

    return dict(templates.install("four-participants", run, build))
