"""Tampering with the blinded path's audit trail, caught by ``audit verify`` (issue 4).

The generic cases (each column edited, the head moved, forged notes) are in
tests/test_audit.py. Here the trail holds the story of issue 4: randomizations,
kits, an emergency unblinding filed under a signed checkpoint (note A), then
the lock and the export under a second one (note B). Each test rewrites it
directly in SQL the way someone covering their tracks would (hide the
unblinding, blame another user, swap two randomizations, recompute the chain
with the key, cut the export off the end) and checks that ``audit verify``
names the event, or that the signed checkpoint does where the MAC cannot.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from randomizer import audit
from tests.support.assertions import assert_error, assert_ok
from tests.support.blinded_path import days_ago, one_per_arm
from tests.support.database import audit_rows, execute, fold_wal, postgres_url
from tests.support.trial import Run, TrialFiles, build_trial, open_trial_vault, scratch_trial

ALTERED = "it was altered, inserted or reordered"
MISSING = "events are missing or out of order"


@dataclass(frozen=True)
class Story:
    """Where the notable events of the trail are."""

    randomizations: tuple[int, ...]
    emergency: int
    note_a: int
    lock: int
    export: int
    note_b: int


def _play(run: Run) -> Story:
    files = run.files
    build_trial(run, "list")
    by_arm = one_per_arm(run, days_ago(100))
    participant = sorted(by_arm.values())[0]
    kit = execute(
        files.db_url,
        "SELECT k.code FROM kits k JOIN participants p ON "
        "p.id = k.participant_id WHERE p.code = :p",
        p=participant,
    )[0][0]
    assert_ok(run("kit", "replace", kit, "--reason", "damaged", user="ivan"))
    assert_ok(run("unblind", "emergency", participant, "--reason", "anaphylaxis", user="ivan"))
    assert_ok(run("audit", "keygen", "--out", str(files.directory / "qa.pem"), user="alice"))
    _checkpoint(run, "a.note")
    assert_ok(run("lock", "--reason", "end of trial", user="alice"))
    assert_ok(run("unblind", "all", "--out", str(files.directory / "final.csv"), user="stan"))
    _checkpoint(run, "b.note")
    events = audit_rows(files.db_url)

    def seq(action: str) -> list[int]:
        return [e["seq"] for e in events if e["action"] == action]

    checkpoints = seq("audit.checkpoint")
    return Story(
        randomizations=tuple(seq("randomize")),
        emergency=seq("unblind.emergency")[0],
        note_a=checkpoints[0],
        lock=seq("lock")[0],
        export=seq("unblind.all")[0],
        note_b=checkpoints[1],
    )


def _checkpoint(run: Run, name: str) -> None:
    directory = run.files.directory
    result = run("audit", "checkpoint", "--signing-key", str(directory / "qa.pem"), user="alice")
    assert_ok(result)
    (directory / name).write_text(result.stdout, encoding="utf-8")


FILES = ("trial.db", "trial.key", "qa.pem", "qa.pem.pub", "a.note", "b.note", "final.csv")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Story] | None]:
    """On SQLite, the story played once into a directory that each test copies."""
    if postgres_url() is not None:
        yield None
        return
    directory = tmp_path_factory.mktemp("tamper-template")
    with scratch_trial(directory) as run:
        story = _play(run)
    fold_wal(directory / "trial.db")
    yield directory, story


@pytest.fixture
def story(run: Run, template: tuple[Path, Story] | None) -> Story:
    """This test's own copy of the played story."""
    files = run.files
    if template is None:
        return _play(run)
    directory, played = template
    assert files.db_path is not None
    for name in FILES:
        target = (
            files.db_path
            if name == "trial.db"
            else files.key_file
            if name == "trial.key"
            else files.directory / name
        )
        shutil.copy2(directory / name, target)
    return played


def tamper(files: TrialFiles, *statements: str, **params: Any) -> None:
    """Change the trail behind the tool's back (on PostgreSQL, as a superuser who switches
    the append-only trigger off first)."""
    if postgres_url() is None:
        execute(files.db_url, *statements, **params)
    else:
        execute(
            files.db_url,
            "ALTER TABLE audit_events DISABLE TRIGGER USER",
            *statements,
            "ALTER TABLE audit_events ENABLE TRIGGER USER",
            **params,
        )


def recompute_from(files: TrialFiles, first: int) -> None:
    """Rewrite the MACs from event ``first`` on, and the head, with the trial's audit key."""
    key = open_trial_vault(files).audit_key()
    events = audit_rows(files.db_url)
    prev = audit.GENESIS_MAC
    statements, params = [], {}
    for event in events:
        if event["seq"] >= first:
            body = audit.canonical(
                event["seq"],
                event["at"],
                event["user"],
                event["role"],
                event["action"],
                event["subject"],
                event["reason"],
                event["details"],
                event["rows"],
            )
            mac = audit.event_mac(key, prev, body)
            n = event["seq"]
            statements.append(
                f"UPDATE audit_events SET prev_mac = :p{n}, mac = :m{n} WHERE seq = {n}"
            )
            params[f"p{n}"], params[f"m{n}"] = prev, mac
            prev = mac
        else:
            prev = event["mac"]
    statements.append("UPDATE audit_head SET seq = :seq, mac = :mac")
    tamper(files, *statements, seq=events[-1]["seq"], mac=prev, **params)


def delete_and_renumber(files: TrialFiles, seq: int) -> None:
    """Remove one event and close the gap, as if it had never been written."""
    tamper(
        files,
        "DELETE FROM audit_events WHERE seq = :seq",
        "UPDATE audit_events SET seq = -seq WHERE seq > :seq",
        "UPDATE audit_events SET seq = -seq - 1 WHERE seq < 0",
        seq=seq,
    )


def verify(run: Run, note: str | None = None) -> Any:
    directory = run.files.directory
    args = ["audit", "verify"]
    if note is not None:
        args += [
            "--checkpoint",
            str(directory / note),
            "--public-key",
            str(directory / "qa.pem.pub"),
        ]
    return run(*args, user="mona")


def test_the_untouched_story_verifies_against_both_notes(run: Run, story: Story) -> None:
    assert story.randomizations and story.emergency < story.note_a < story.lock
    assert story.lock < story.export < story.note_b
    for note, seq in (("a.note", story.note_a), ("b.note", story.note_b)):
        result = verify(run, note)
        assert_ok(result)
        assert result.stdout.endswith(f"; signed checkpoint at event {seq} holds\n")


def test_hiding_the_emergency_unblinding_is_caught(run: Run, story: Story) -> None:
    tamper(run.files, "DELETE FROM audit_events WHERE seq = :seq", seq=story.emergency)
    message = assert_error(verify(run), 1)
    assert message == f"audit trail broken at event {story.emergency}: {MISSING}"


@pytest.mark.parametrize(
    ("column", "value"),
    [("reason", "routine check"), ("user", "alice"), ("at", "2020-01-01T00:00:00.000000Z")],
)
def test_rewriting_the_emergency_unblinding_is_caught(
    run: Run, story: Story, column: str, value: str
) -> None:
    tamper(
        run.files,
        f'UPDATE audit_events SET "{column}" = :value WHERE seq = :seq',
        value=value,
        seq=story.emergency,
    )
    assert assert_error(verify(run), 1) == (
        f"audit trail broken at event {story.emergency}: {ALTERED}"
    )


def test_a_forged_approval_inserted_before_the_unblinding_is_caught(run: Run, story: Story) -> None:
    files = run.files
    previous = audit_rows(files.db_url)[story.emergency - 2]
    tamper(
        files,
        "UPDATE audit_events SET seq = -seq WHERE seq >= :seq",
        "UPDATE audit_events SET seq = -seq + 1 WHERE seq < 0",
        'INSERT INTO audit_events (seq, at, "user", role, action, subject, reason, details, '
        "prev_mac, mac) VALUES (:seq, :at, 'alice', 'admin', 'unblind.approve', 'P-001', "
        "'approved', '{}', :prev, :mac)",
        "UPDATE audit_head SET seq = seq + 1",
        seq=story.emergency,
        at=previous["at"],
        prev=previous["mac"],
        mac="ab" * 32,
    )
    assert (
        assert_error(verify(run), 1) == f"audit trail broken at event {story.emergency}: {ALTERED}"
    )


def test_swapping_two_randomizations_is_caught(run: Run, story: Story) -> None:
    files = run.files
    first, second = story.randomizations[0], story.randomizations[1]
    rows = {e["seq"]: e for e in audit_rows(files.db_url)}
    columns = ("at", "user", "role", "action", "subject", "reason", "prev_mac", "mac")
    statements, params = [], {}
    for target, source in ((first, second), (second, first)):
        assignments = ", ".join(f'"{c}" = :{c}{target}' for c in columns)
        statements.append(
            f"UPDATE audit_events SET {assignments}, details = :d{target} WHERE seq = {target}"
        )
        params.update({f"{c}{target}": rows[source][c] for c in columns})
        params[f"d{target}"] = execute(
            files.db_url, "SELECT details FROM audit_events WHERE seq = :s", s=source
        )[0][0]
    tamper(files, *statements, **params)
    assert assert_error(verify(run), 1) == f"audit trail broken at event {first}: {ALTERED}"


def test_a_trail_rewritten_with_the_key_is_caught_by_the_earlier_checkpoint(
    run: Run, story: Story
) -> None:
    """Someone holding the key file deletes the unblinding and recomputes every MAC."""
    files = run.files
    delete_and_renumber(files, story.emergency)
    recompute_from(files, story.emergency)
    assert [e for e in audit_rows(files.db_url) if e["action"] == "unblind.emergency"] == []
    # the chain is whole again: the MACs alone cannot tell
    assert verify(run).stdout.startswith("Audit trail verified: ")
    # the note filed after the unblinding can
    for note, seq in (("a.note", story.note_a), ("b.note", story.note_b)):
        assert assert_error(verify(run, note), 1) == (
            f"audit trail differs from the signed checkpoint at event {seq}: the trail was "
            "rewritten or cut"
        )


def test_an_edit_recomputed_with_the_key_is_caught_by_the_checkpoint(
    run: Run, story: Story
) -> None:
    files = run.files
    tamper(
        files,
        "UPDATE audit_events SET reason = 'routine check' WHERE seq = :seq",
        seq=story.emergency,
    )
    assert_error(verify(run), 1)
    recompute_from(files, story.emergency)
    assert_ok(verify(run))
    assert assert_error(verify(run, "a.note"), 1).startswith(
        f"audit trail differs from the signed checkpoint at event {story.note_a}"
    )


def test_cutting_the_export_off_the_tail_is_caught_by_the_checkpoint(
    run: Run, story: Story
) -> None:
    """Delete the last events (the export and the note B checkpoint) and fix the head."""
    files = run.files
    keep = story.export - 1
    mac = execute(files.db_url, "SELECT mac FROM audit_events WHERE seq = :s", s=keep)[0][0]
    tamper(
        files,
        "DELETE FROM audit_events WHERE seq > :keep",
        "UPDATE audit_head SET seq = :keep, mac = :mac",
        keep=keep,
        mac=mac,
    )
    # verify's own login becomes event keep + 1, short of note B's event
    message = assert_error(verify(run, "b.note"), 1)
    assert message == (
        f"audit trail ends at event {keep + 1} but the signed checkpoint "
        f"names event {story.note_b}: the tail was cut"
    )
    # the chain is consistent and the older note still holds: only the newer one tells
    assert_ok(verify(run, "a.note"))
    assert_ok(verify(run))
    assert [e for e in audit_rows(files.db_url) if e["action"] == "unblind.all"] == []


def test_cutting_the_tail_without_fixing_the_head_is_caught_without_a_note(
    run: Run, story: Story
) -> None:
    tamper(run.files, "DELETE FROM audit_events WHERE seq >= :seq", seq=story.export)
    # verify's own login follows the stale head: the gap before it is named
    assert assert_error(verify(run), 1) == f"audit trail broken at event {story.export}: {MISSING}"
