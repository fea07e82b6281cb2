"""The audit trail: what is recorded, tampering caught and named, signed checkpoints."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from randomizer import audit
from randomizer.errors import AuditError
from randomizer.models import AuditRecord as AuditRow
from randomizer.models import Base
from randomizer.store import Store
from tests.support.assertions import assert_error
from tests.support.database import audit_rows, execute, postgres_url
from tests.support.exosome import TRIAL_ID
from tests.support.trial import ADMIN, PASSWORDS, Run, TrialFiles, open_trial_vault

UTC_TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
ALTERED = "it was altered, inserted or reordered"
MISSING = "events are missing or out of order"


def tamper(files: TrialFiles, *statements: str, **params: Any) -> None:
    """Change the trail behind the tool's back. On PostgreSQL the table refuses UPDATE and
    DELETE by trigger, so this plays a superuser who switches the trigger off first."""
    if postgres_url() is None:
        execute(files.db_url, *statements, **params)
        return
    execute(
        files.db_url,
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
        *statements,
        "ALTER TABLE audit_events ENABLE TRIGGER USER",
        **params,
    )


def last_seq(files: TrialFiles) -> int:
    return int(execute(files.db_url, "SELECT max(seq) FROM audit_events")[0][0])


def verify_fails(run: Run, files: TrialFiles, message: str, **kwargs: Any) -> None:
    """``audit verify`` refuses with exactly ``message``, and the refusal is recorded."""
    result = run("audit", "verify", user=ADMIN, **kwargs)
    assert assert_error(result, 1) == message
    assert result.stdout == ""


# What the trail records --------------------------------------------------------------------


def test_the_chain_verifies_after_the_whole_setup(trial_with_list: TrialFiles, run: Run) -> None:
    files = trial_with_list
    run.ok("list", "verify", user=ADMIN)
    run.ok("user", "disable", "mona", "--reason", "left the team", user=ADMIN)
    run.ok("user", "passwd", "--password-stdin", user="ivan", input="ivan-new-password\n")
    run("user", "list", user="ivan", password="wrong-password-1")  # auth.failed
    run("user", "list", user="petra")  # refused
    rotated = files.directory / "rotated.key"
    run.ok("key", "rotate", "--new-key-file", str(rotated), user=ADMIN)
    files.key_file = rotated
    signing = files.directory / "qa.pem"
    run.ok("audit", "keygen", "--out", str(signing))
    run.ok("audit", "checkpoint", "--signing-key", str(signing), user=ADMIN)
    events = audit_rows(files.db_url)

    result = run.ok("audit", "verify", user=ADMIN)

    assert result.stdout.startswith(f"Audit trail verified: {len(events) + 1} events, head ")
    actions = {e["action"] for e in events}
    assert {
        "trial.init",
        "user.add",
        "auth.login",
        "list.generate",
        "list.verify",
        "user.disable",
        "user.passwd",
        "auth.failed",
        "refused",
        "key.rotate",
        "audit.checkpoint",
    } <= actions
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["prev_mac"] == audit.GENESIS_MAC
    assert all(b["prev_mac"] == a["mac"] for a, b in zip(events, events[1:], strict=False))
    assert all(UTC_TEXT.match(e["at"]) for e in events)
    assert all(e["user"] and e["role"] for e in events)
    assert {e["user"] for e in events} == {ADMIN, "ivan", "petra", "stan"}  # stan approved
    # no password, hash or key in the trail
    trail = json.dumps(events)
    for secret in (
        *PASSWORDS.values(),
        "ivan-new-password",
        "scrypt$",
        files.key_file.read_text().strip(),
    ):
        assert secret not in trail


def test_account_changes_record_before_and_after(trial_with_users: TrialFiles, run: Run) -> None:
    run.ok("user", "disable", "stan", "--reason", "moved to another trial", user=ADMIN)
    run.ok(
        "user", "passwd", "petra", "--password-stdin", user=ADMIN, input="petra-reset-password\n"
    )
    events = {e["action"]: e for e in audit_rows(trial_with_users.db_url)}
    assert events["user.disable"]["details"] == {
        "before": {"role": "statistician", "disabled": False},
        "after": {"role": "statistician", "disabled": True},
    }
    assert events["user.disable"]["reason"] == "moved to another trial"
    assert events["user.passwd"]["subject"] == "petra"
    assert set(events["user.passwd"]["details"]) == {"before", "after"}


def test_audit_show_text_json_since_and_limit(trial_with_list: TrialFiles, run: Run) -> None:
    total = last_seq(trial_with_list)
    text = run.ok("audit", "show", user="mona").stdout.splitlines()
    assert len(text) == total + 1  # the monitor's own login is the newest event
    assert re.match(r'^\s+1 \S+Z "alice"\(admin\) trial\.init "exosome-ms" ', text[0])
    assert text[-1].split()[2:] == ['"mona"(monitor)', "auth.login", '"audit.show"']
    shown = json.loads(
        run.ok("audit", "show", "--json", "--since", "3", "--limit", "2", user=ADMIN).stdout
    )
    assert [e["seq"] for e in shown] == [4, 5]
    assert set(shown[0]) == {
        "seq",
        "at",
        "user",
        "role",
        "action",
        "subject",
        "reason",
        "details",
        "mac",
    }
    assert shown == [
        {k: v for k, v in e.items() if k not in ("prev_mac", "rows")}
        for e in audit_rows(trial_with_list.db_url)[3:5]
    ]
    far = run.ok("audit", "show", "--since", "100000", user=ADMIN).stdout
    assert far == "(no events)\n"
    assert_error(run("audit", "show", "--since", "-1", user=ADMIN), 2, "--since")


def test_times_are_utc() -> None:
    warsaw = timezone(timedelta(hours=2))
    assert (
        audit.utc_text(datetime(2026, 6, 1, 14, 0, 0, 123, tzinfo=warsaw))
        == "2026-06-01T12:00:00.000123Z"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        audit.utc_text(datetime(2026, 6, 1, 14, 0))


# Tampering through SQL ---------------------------------------------------------------------


K = 5  # an event in the middle of the trail (an auth.login of the setup)

EDITS = {
    "at": "UPDATE audit_events SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = 5",
    "user": "UPDATE audit_events SET \"user\" = 'mallory' WHERE seq = 5",
    "role": "UPDATE audit_events SET role = 'monitor' WHERE seq = 5",
    "action": "UPDATE audit_events SET action = 'user.list' WHERE seq = 5",
    "subject": "UPDATE audit_events SET subject = 'nothing' WHERE seq = 5",
    "reason": "UPDATE audit_events SET reason = 'edited' WHERE seq = 5",
    "details": "UPDATE audit_events SET details = '{\"forged\": true}' WHERE seq = 5",
    "mac": f"UPDATE audit_events SET mac = '{'ab' * 32}' WHERE seq = 5",
    "prev_mac": f"UPDATE audit_events SET prev_mac = '{'cd' * 32}' WHERE seq = 5",
}


@pytest.mark.parametrize("column", list(EDITS))
def test_an_edited_event_is_caught_and_named(
    column: str, trial_with_list: TrialFiles, run: Run
) -> None:
    run.ok("audit", "verify", user=ADMIN)
    tamper(trial_with_list, EDITS[column])
    verify_fails(run, trial_with_list, f"audit trail broken at event {K}: {ALTERED}")
    refusal = audit_rows(trial_with_list.db_url)[-1]
    assert (refusal["action"], refusal["details"]["command"]) == ("refused", "audit.verify")


def test_details_that_are_not_json_are_caught(trial_with_list: TrialFiles, run: Run) -> None:
    tamper(trial_with_list, "UPDATE audit_events SET details = 'not json' WHERE seq = 5")
    verify_fails(run, trial_with_list, "audit trail broken at event 5: details are not JSON")


@pytest.mark.parametrize("seq", [1, K])
def test_a_deleted_event_is_caught_and_named(
    seq: int, trial_with_list: TrialFiles, run: Run
) -> None:
    tamper(trial_with_list, f"DELETE FROM audit_events WHERE seq = {seq}")
    verify_fails(run, trial_with_list, f"audit trail broken at event {seq}: {MISSING}")


def test_a_deleted_last_event_is_caught_and_named(trial_with_list: TrialFiles, run: Run) -> None:
    last = last_seq(trial_with_list)
    tamper(trial_with_list, f"DELETE FROM audit_events WHERE seq = {last}")
    verify_fails(run, trial_with_list, f"audit trail broken at event {last}: {MISSING}")


def test_an_inserted_event_is_caught_and_named(trial_with_list: TrialFiles, run: Run) -> None:
    files = trial_with_list
    k4 = audit_rows(files.db_url)[K - 2]
    tamper(
        files,
        f"UPDATE audit_events SET seq = seq + 1000 WHERE seq >= {K}",
        "UPDATE audit_events SET seq = seq - 999 WHERE seq > 1000",
        'INSERT INTO audit_events (seq, at, "user", role, action, subject, reason, '
        "details, prev_mac, mac) VALUES (:seq, :at, 'alice', 'admin', 'user.add', "
        "'mallory', '', '{}', :prev, :mac)",
        "UPDATE audit_head SET seq = seq + 1",
        seq=K,
        at=k4["at"],
        prev=k4["mac"],
        mac="ef" * 32,
    )
    verify_fails(run, files, f"audit trail broken at event {K}: {ALTERED}")


def test_an_event_appended_beyond_the_head_is_caught_and_named(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    last = audit_rows(files.db_url)[-1]
    tamper(
        files,
        'INSERT INTO audit_events (seq, at, "user", role, action, subject, reason, '
        "details, prev_mac, mac) VALUES (:seq, :at, 'alice', 'admin', 'user.add', "
        "'mallory', '', '{}', :prev, :mac)",
        seq=last["seq"] + 1,
        at=last["at"],
        prev=last["mac"],
        mac="ef" * 32,
    )
    message = (
        f"audit trail broken after event {last['seq']}: event {last['seq'] + 1} "
        "already exists beyond the head (events were inserted or the head was edited)"
    )
    verify_fails(run, files, message)
    # every other command refuses too, rather than write on a damaged trail
    assert assert_error(run("user", "list", user=ADMIN), 1) == message


def test_reordered_events_are_caught_and_named(trial_with_list: TrialFiles, run: Run) -> None:
    tamper(
        trial_with_list,
        f"UPDATE audit_events SET seq = -1 WHERE seq = {K - 1}",
        f"UPDATE audit_events SET seq = {K - 1} WHERE seq = {K}",
        f"UPDATE audit_events SET seq = {K} WHERE seq = -1",
    )
    verify_fails(run, trial_with_list, f"audit trail broken at event {K - 1}: {ALTERED}")


def test_an_edited_head_is_caught(trial_with_list: TrialFiles, run: Run) -> None:
    last = last_seq(trial_with_list)
    execute(trial_with_list.db_url, f"UPDATE audit_head SET mac = '{'ab' * 32}'")
    # the next event (verify's own login) is chained to the forged head
    verify_fails(run, trial_with_list, f"audit trail broken at event {last + 1}: {ALTERED}")


def test_a_head_moved_back_is_caught(trial_with_list: TrialFiles, run: Run) -> None:
    last = last_seq(trial_with_list)
    execute(trial_with_list.db_url, "UPDATE audit_head SET seq = seq - 1")
    verify_fails(
        run,
        trial_with_list,
        f"audit trail broken after event {last - 1}: event {last} already exists "
        "beyond the head (events were inserted or the head was edited)",
    )


def test_postgres_refuses_update_and_delete_on_the_trail(
    trial_with_list: TrialFiles, is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("the append-only trigger exists on PostgreSQL only")
    for statement in (
        "UPDATE audit_events SET reason = 'x' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 1",
        "TRUNCATE audit_events",
    ):
        with pytest.raises(Exception, match="append-only|audit"):
            execute(trial_with_list.db_url, statement)
    assert len(audit_rows(trial_with_list.db_url)) == last_seq(trial_with_list)


# The chain, as a property of the library ------------------------------------------------


@pytest.fixture
def memory_store() -> Iterator[Store]:
    store = Store("sqlite://")
    with store.transaction() as session:
        Base.metadata.create_all(session.connection())
        audit.start_chain(session)
    yield store
    store.dispose()


event_text = st.text(max_size=20)
details_strategy = st.dictionaries(
    st.text(max_size=8),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.text(max_size=12),
        st.lists(st.integers(0, 9), max_size=3),
    ),
    max_size=4,
)
event_strategy = st.tuples(event_text, event_text, event_text, details_strategy)

FIELDS = ("at", "user", "role", "action", "subject", "reason", "details")


def _append_all(
    store: Store, key: bytes, events: list[tuple[str, str, str, dict[str, Any]]], start: datetime
) -> None:
    with store.transaction() as session:
        for i, (user, action, subject, details) in enumerate(events):
            audit.append(
                session,
                key,
                now=start + timedelta(seconds=i),
                user=user,
                role="admin",
                action=action,
                subject=subject,
                reason=subject[::-1],
                details=details,
            )


@settings(max_examples=60, deadline=None)
@given(events=st.lists(event_strategy, min_size=1, max_size=8), data=st.data())
def test_any_single_edit_is_named(
    events: list[tuple[str, str, str, dict[str, Any]]], data: st.DataObject
) -> None:
    key = bytes(range(32))
    store = Store("sqlite://")
    try:
        with store.transaction() as session:
            Base.metadata.create_all(session.connection())
            audit.start_chain(session)
        _append_all(store, key, events, datetime(2026, 1, 1, tzinfo=UTC))
        with store.transaction() as session:
            report = audit.verify(session, key)
        assert report.events == len(events)

        seq = data.draw(st.integers(1, len(events)), label="seq")
        column = data.draw(st.sampled_from(FIELDS), label="column")
        with store.transaction() as session:
            row = session.get(AuditRow, seq)
            assert row is not None
            old = getattr(row, column)
            if column == "details":
                new = json.dumps({**json.loads(old), "\u0000forged": 1})
            else:
                new = data.draw(event_text.filter(lambda t: t != old), label="new")
            session.execute(update(AuditRow).where(AuditRow.seq == seq).values({column: new}))
        with (
            store.transaction() as session,
            pytest.raises(AuditError, match=f"^audit trail broken at event {seq}: "),
        ):
            audit.verify(session, key)
    finally:
        store.dispose()


def test_a_chain_under_another_key_does_not_verify(memory_store: Store) -> None:
    _append_all(
        memory_store, bytes(32), [("alice", "x", "y", {})] * 3, datetime(2026, 1, 1, tzinfo=UTC)
    )
    with (
        memory_store.transaction() as session,
        pytest.raises(AuditError, match=f"^audit trail broken at event 1: {ALTERED}$"),
    ):
        audit.verify(session, bytes([1]) * 32)


# Signed checkpoints -----------------------------------------------------------------------


def keygen(run: Run, files: TrialFiles, name: str = "qa-signing.pem") -> tuple[Path, Path]:
    private = files.directory / name
    result = run.ok("audit", "keygen", "--out", str(private))
    public = files.directory / f"{name}.pub"
    assert result.stdout == (
        f"Signing key written to {private} (mode 0600), public key to {public}.\n"
    )
    return private, public


def take_checkpoint(run: Run, files: TrialFiles) -> tuple[Path, Path, int]:
    """Keygen, checkpoint; returns (note file, public key, checkpointed sequence)."""
    private, public = keygen(run, files)
    note = run.ok("audit", "checkpoint", "--signing-key", str(private), user=ADMIN).stdout
    path = files.directory / "head.note"
    path.write_text(note, encoding="utf-8")
    match = re.search(r"^sequence: (\d+)$", note, re.MULTILINE)
    assert match is not None
    return path, public, int(match.group(1))


def verify_with(run: Run, note: Path, public: Path, **kwargs: Any) -> Any:
    return run(
        "audit",
        "verify",
        "--checkpoint",
        str(note),
        "--public-key",
        str(public),
        user=ADMIN,
        **kwargs,
    )


def more_activity(run: Run) -> None:
    run.ok("user", "list", user=ADMIN)
    run.ok("user", "disable", "mona", user=ADMIN)
    run.ok("list", "verify", user=ADMIN)


def test_keygen_writes_a_private_key_and_refuses_to_overwrite(
    trial_files: TrialFiles, run: Run
) -> None:
    private, public = keygen(run, trial_files)
    assert private.stat().st_mode & 0o777 == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    before = private.read_bytes(), public.read_bytes()
    result = run("audit", "keygen", "--out", str(private))
    assert assert_error(result, 2) == f"{private} already exists: refusing to overwrite it"
    public_only = trial_files.directory / "other.pem"
    Path(f"{public_only}.pub").write_text("keep me")
    assert (
        assert_error(run("audit", "keygen", "--out", str(public_only)), 2)
        == f"{public_only}.pub already exists: refusing to overwrite it"
    )
    assert not public_only.exists()
    assert (private.read_bytes(), public.read_bytes()) == before


def test_a_checkpoint_note_verifies(trial_with_list: TrialFiles, run: Run) -> None:
    note, public, seq = take_checkpoint(run, trial_with_list)
    lines = note.read_text().splitlines()
    assert lines[0] == "randomizer audit checkpoint v1"
    assert lines[1] == f"trial: {TRIAL_ID}"
    assert lines[3] == f"head: {audit_rows(trial_with_list.db_url)[seq - 1]['mac']}"
    assert audit_rows(trial_with_list.db_url)[seq - 1]["action"] == "audit.checkpoint"
    more_activity(run)
    result = verify_with(run, note, public)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.rstrip().endswith(f"; signed checkpoint at event {seq} holds")
    event = audit_rows(trial_with_list.db_url)[-1]
    assert (event["action"], event["details"]["checkpoint"]) == ("audit.verify", seq)


def cut_tail(files: TrialFiles, keep: int) -> None:
    """Delete every event after ``keep`` and point the head at the new last event."""
    mac = audit_rows(files.db_url)[keep - 1]["mac"]
    tamper(
        files,
        "DELETE FROM audit_events WHERE seq > :keep",
        "UPDATE audit_head SET seq = :keep, mac = :mac",
        keep=keep,
        mac=mac,
    )


def test_a_cut_tail_passes_plain_verify_but_not_the_checkpoint(
    trial_with_list: TrialFiles, run: Run
) -> None:
    note, public, seq = take_checkpoint(run, trial_with_list)
    more_activity(run)
    cut_tail(trial_with_list, seq - 3)
    # verify's own login becomes event seq - 2: the trail ends before the signed head
    result = verify_with(run, note, public)
    assert assert_error(result, 1) == (
        f"audit trail ends at event {seq - 2} but the signed "
        f"checkpoint names event {seq}: the tail was cut"
    )
    # the chain itself is consistent: without the note, nothing shows
    assert run.ok("audit", "verify", user=ADMIN).stdout.startswith("Audit trail verified")


def test_a_tail_cut_and_regrown_differs_from_the_checkpoint(
    trial_with_list: TrialFiles, run: Run
) -> None:
    note, public, seq = take_checkpoint(run, trial_with_list)
    more_activity(run)
    cut_tail(trial_with_list, seq - 1)
    # verify's own login lands on the signed sequence number with another MAC
    assert assert_error(verify_with(run, note, public), 1) == (
        f"audit trail differs from the signed checkpoint at event {seq}: the trail was "
        "rewritten or cut"
    )


def recompute_chain(files: TrialFiles, key: bytes) -> None:
    """Rewrite every MAC and the head with the audit key, as a key holder could."""
    events = audit_rows(files.db_url)
    prev = audit.GENESIS_MAC
    statements, params = [], {}
    for e in events:
        body = audit.canonical(
            e["seq"],
            e["at"],
            e["user"],
            e["role"],
            e["action"],
            e["subject"],
            e["reason"],
            e["details"],
            e["rows"],
        )
        mac = audit.event_mac(key, prev, body)
        statements.append(
            f"UPDATE audit_events SET prev_mac = :p{e['seq']}, "
            f"mac = :m{e['seq']} WHERE seq = {e['seq']}"
        )
        params[f"p{e['seq']}"], params[f"m{e['seq']}"] = prev, mac
        prev = mac
    statements.append("UPDATE audit_head SET mac = :head")
    tamper(files, *statements, head=prev, **params)


def test_a_chain_recomputed_with_the_key_fails_only_against_the_checkpoint(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    note, public, seq = take_checkpoint(run, files)
    more_activity(run)
    # erase who was added first: edit event 4 and recompute the whole chain with the key
    assert audit_rows(files.db_url)[3]["subject"] == "ivan"
    tamper(files, "UPDATE audit_events SET subject = 'nobody' WHERE seq = 4")
    recompute_chain(files, open_trial_vault(files).audit_key())

    assert run.ok("audit", "verify", user=ADMIN).stdout.startswith("Audit trail verified")
    assert assert_error(verify_with(run, note, public), 1) == (
        f"audit trail differs from the signed checkpoint at event {seq}: the trail was "
        "rewritten or cut"
    )


@pytest.mark.parametrize(
    "line, replacement",
    [
        ("sequence: ", lambda v: str(int(v) - 1)),
        ("head: ", lambda v: "0" * 64),
        ("time: ", lambda v: v.replace("T", "T0", 1)[: len(v)]),
        ("trial: ", lambda v: v + "-2"),
    ],
    ids=["sequence", "head", "time", "trial"],
)
def test_a_forged_note_fails_its_signature(
    line: str, replacement: Any, trial_with_list: TrialFiles, run: Run
) -> None:
    note, public, _ = take_checkpoint(run, trial_with_list)
    lines = note.read_text().splitlines()
    lines = [f"{line}{replacement(x[len(line) :])}" if x.startswith(line) else x for x in lines]
    note.write_text("\n".join(lines) + "\n")
    assert assert_error(verify_with(run, note, public), 1) == (
        "the checkpoint note's signature does not verify with this public key: the note is "
        "forged or altered"
    )


def test_a_note_checked_with_another_public_key_fails(
    trial_with_list: TrialFiles, run: Run
) -> None:
    note, _, _ = take_checkpoint(run, trial_with_list)
    _, other_public = keygen(run, trial_with_list, "other.pem")
    assert_error(verify_with(run, note, other_public), 1, "forged or altered")


def test_a_note_for_another_trial_is_refused(trial_with_list: TrialFiles, run: Run) -> None:
    private, public = keygen(run, trial_with_list)
    note = trial_with_list.directory / "other.note"
    note.write_text(
        audit.sign_checkpoint(
            audit.Checkpoint("other-trial", 3, "00" * 32, "2026-01-01T00:00:00.000000Z"),
            private.read_bytes(),
        )
    )
    assert (
        assert_error(verify_with(run, note, public), 2)
        == f"the checkpoint is for trial 'other-trial', not {TRIAL_ID!r}"
    )


def test_checkpoint_bad_input(trial_with_list: TrialFiles, run: Run) -> None:
    files = trial_with_list
    note, public, _ = take_checkpoint(run, files)
    malformed = files.directory / "bad.note"
    malformed.write_text("\n".join(note.read_text().splitlines()[:4]) + "\n")
    assert assert_error(verify_with(run, malformed, public), 2) == (
        "the checkpoint note is malformed: give the signed note exactly as the audit "
        "checkpoint wrote it (made by 'randomizer audit checkpoint')"
    )
    assert assert_error(run("audit", "verify", "--checkpoint", str(note), user=ADMIN), 2) == (
        "a checkpoint note is checked with the public key that signed it: give that public "
        "key too (give --public-key FILE with --checkpoint)"
    )
    missing = files.directory / "missing.note"
    assert (
        assert_error(verify_with(run, missing, public), 2)
        == f"cannot read checkpoint note {missing}: No such file or directory"
    )
    assert (
        assert_error(verify_with(run, note, note), 2)
        == "the public key is not an Ed25519 public key PEM"
    )
    assert (
        assert_error(run("audit", "checkpoint", "--signing-key", str(public), user=ADMIN), 2)
        == "the signing key is not an unencrypted Ed25519 private key PEM"
    )


def test_checkpoint_out_writes_the_note_to_a_new_file(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    private, public = keygen(run, files)
    note = files.directory / "head.note"
    result = run.ok(
        "audit", "checkpoint", "--signing-key", str(private), "--out", str(note), user=ADMIN
    )
    assert result.stdout == (
        f"Checkpoint note written to {note}: file it away from the database host.\n"
    )
    assert note.read_text().startswith("randomizer audit checkpoint v1\n")
    assert stat.S_IMODE(note.stat().st_mode) == 0o600
    verified = verify_with(run, note, public)
    assert verified.exit_code == 0, verified.stderr
    assert "signed checkpoint at event" in verified.stdout
    # an existing file is never overwritten, and nothing is signed or recorded
    events = len(audit_rows(files.db_url))
    content = note.read_bytes()
    assert (
        assert_error(
            run(
                "audit", "checkpoint", "--signing-key", str(private), "--out", str(note), user=ADMIN
            ),
            2,
        )
        == f"{note} already exists: refusing to overwrite it"
    )
    assert note.read_bytes() == content
    assert len(audit_rows(files.db_url)) == events
    # a refused command leaves no file (a redirection would leave an empty one)
    refused_note = files.directory / "refused.note"
    assert (
        assert_error(
            run(
                "audit",
                "checkpoint",
                "--signing-key",
                str(private),
                "--out",
                str(refused_note),
                user="mona",
            ),
            1,
        )
        == "role monitor may not sign audit checkpoints"
    )
    assert not refused_note.exists()


def test_no_checkpoint_is_signed_over_a_broken_trail(trial_with_list: TrialFiles, run: Run) -> None:
    private, _ = keygen(run, trial_with_list)
    tamper(trial_with_list, EDITS["subject"])
    result = run("audit", "checkpoint", "--signing-key", str(private), user=ADMIN)
    assert assert_error(result, 1) == f"audit trail broken at event {K}: {ALTERED}"
    assert result.stdout == ""
