"""Helpers shared by the tests of the blinded path (issue 4).

Eligibility answers, dated randomizations, reading arms as the key holder,
the arm-word leak check, refusal normalisation and a database for
module-scoped fixtures. Fixtures stay in the test files; this module holds
plain functions only.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from randomizer import access
from randomizer.design import load_design
from randomizer.trial import open_allocation
from tests.conftest import (
    TRIAL_ID,
    USERS,
    Run,
    TrialFiles,
    assert_error,
    assert_ok,
    audit_rows,
    build_trial,
    dump_database,
    execute,
    open_trial_vault,
    postgres_url,
    without_cli_hint,
)

ELIGIBLE: Mapping[str, str] = {
    "age": "45",
    "progressive_ms": "yes",
    "edss": "4.5",
    "recent_relapse_or_steroids": "no",
    "other_neuro_autoimmune": "no",
    "infection_malignancy_systemic": "no",
}
"""Answers that pass every criterion of the exosome-ms design."""

DESIGN = load_design("exosome-ms")

ARM_WORDS = ("exosome", "saline", "placebo", "msc-derived exosomes", "0.9% saline (placebo)",
             *(arm.id.lower() for arm in DESIGN.arms),
             *(arm.label.lower() for arm in DESIGN.arms))
"""What must never reach a blinded role (matched case-insensitively)."""

PUBLIC_TEXT = (DESIGN.title, TRIAL_ID)
"""Public text that happens to contain arm words: the trial title and id."""

KIT_CODE = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}\b")


def answer_args(**overrides: str) -> list[str]:
    """``--answer`` options for the eligible answers, with ``overrides`` replacing some."""
    answers = {**ELIGIBLE, **overrides}
    return [arg for name, value in answers.items() for arg in ("--answer", f"{name}={value}")]


def today() -> date:
    """Today's date on the local calendar, as the service counts it."""
    return datetime.now(UTC).astimezone().date()


def days_ago(days: int) -> date:
    """The local date ``days`` before today (negative: in the future)."""
    return today() - timedelta(days=days)


def randomize(run: Run, participant: str, on: date, **overrides: str) -> dict[str, Any]:
    """Randomize an eligible participant as ivan; return the --json result."""
    import json

    result = run("randomize", participant, "--site", "WAW", *answer_args(**overrides),
                 "--date", on.isoformat(), "--json", user="ivan")
    assert_ok(result)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def participant_arms(files: TrialFiles) -> dict[str, str]:
    """Every randomized participant's arm, read as the key holder from the sealed slots."""
    vault = open_trial_vault(files)
    rows = execute(files.db_url,
                   "SELECT p.code, st.key, s.sequence, s.allocation_sealed "
                   "FROM participants p JOIN slots s ON s.id = p.slot_id "
                   "JOIN strata st ON st.id = s.stratum_id")
    return {code: open_allocation(vault, key, sequence, bytes(sealed))[0]
            for code, key, sequence, sealed in rows}


def live_kit(files: TrialFiles, participant: str, visit: int) -> str:
    """The code of a participant's live (not voided) kit of one visit."""
    rows = execute(files.db_url,
                   "SELECT k.code FROM kits k JOIN participants p ON p.id = k.participant_id "
                   "WHERE p.code = :p AND k.visit = :v AND k.status != 'voided'",
                   p=participant, v=visit)
    assert len(rows) == 1, rows
    return str(rows[0][0])


def stratum_size(files: TrialFiles) -> int:
    """Slots in the (only) stratum of the generated list."""
    return int(execute(files.db_url, "SELECT size FROM strata WHERE key = 'all'")[0][0])


def arm_words_in(text: str) -> list[str]:
    """Arm ids or labels in ``text`` once the public title and trial id are taken out."""
    masked = text
    for public in PUBLIC_TEXT:
        masked = masked.replace(public, "<public>")
    low = masked.lower()
    return [word for word in ARM_WORDS if word in low]


def assert_no_arm(result: Result, what: str = "") -> None:
    """Neither stdout nor stderr of ``result`` names an arm."""
    for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        found = arm_words_in(text)
        assert not found, f"{what}: {stream} names {found}: {text!r}"


def normalized(text: str, names: Mapping[str, str]) -> str:
    """``text`` with participant ids, numbers and kit codes replaced by placeholders."""
    for name, placeholder in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(name, placeholder)
    return text


def new_events(before: Iterable[Mapping[str, Any]],
               after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Audit events in ``after`` beyond the last sequence number of ``before``."""
    last = max((event["seq"] for event in before), default=0)
    return [event for event in after if event["seq"] > last]


def without_audit(dump: Mapping[str, Any]) -> dict[str, Any]:
    """A database dump less the audit trail (refusals are recorded there)."""
    return {name: rows for name, rows in dump.items()
            if name not in ("audit_events", "audit_head")}


def refused(run: Run, *args: str, user: str, code: int, fragments: Iterable[str] = (),
            command: str | None = None) -> str:
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


@contextlib.contextmanager
def scratch_db_url(directory: Path) -> Iterator[str]:
    """A database for a module-scoped fixture: SQLite in ``directory`` or a PostgreSQL schema.

    The same policy as conftest's function-scoped ``db_url``: on PostgreSQL a
    schema of its own named in the URL's ``search_path`` and ``application_name``.
    """
    server = postgres_url()
    if server is None:
        yield f"sqlite:///{directory / 'trial.db'}"
        return
    schema = f"randomizer_test_{uuid.uuid4().hex[:16]}"
    maintenance = create_engine(make_url(server), isolation_level="AUTOCOMMIT")
    try:
        with maintenance.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(server).update_query_dict(
            {"options": f"-csearch_path={schema}", "application_name": schema})
        yield url.render_as_string(hide_password=False)
    finally:
        with maintenance.connect() as conn:
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE application_name = '{schema}'")
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        maintenance.dispose()


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

_four_templates: dict[Path, tuple[TrialFiles, dict[str, str]]] = {}


def four_participants(run: Run, basetemp: Path) -> dict[str, str]:
    """The trial with its list and P-001..P-004 randomized on FOUR_DAY0, in ``run``'s files.

    Returns arm -> the first participant in that arm. On SQLite the trial is
    built once per session under ``basetemp`` and copied (as conftest's
    templates are); on PostgreSQL it is built in place.
    """
    files = run.files
    if files.db_path is None:
        build_trial(run, "list")
        return one_per_arm(run, FOUR_DAY0)
    if basetemp not in _four_templates:
        directory = basetemp / "four-participants"
        directory.mkdir()
        template = TrialFiles(db_url=f"sqlite:///{directory / 'trial.db'}",
                              key_file=directory / "trial.key", directory=directory)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(access, "SCRYPT_N", 2**10)
            template_run = Run(template)
            build_trial(template_run, "list")
            by_arm = one_per_arm(template_run, FOUR_DAY0)
        assert template.db_path is not None
        connection = sqlite3.connect(template.db_path)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
        _four_templates[basetemp] = (template, by_arm)
    template, by_arm = _four_templates[basetemp]
    assert template.db_path is not None
    shutil.copy2(template.db_path, files.db_path)
    shutil.copy2(template.key_file, files.key_file)
    files.users.update(USERS)
    return dict(by_arm)
