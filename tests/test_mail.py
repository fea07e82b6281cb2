"""Notification e-mails of emergency unblindings (issue 12 item 5): outbox and sender.

Each emergency unblinding writes one message into the outbox in its own
transaction; :func:`randomizer.mail.deliver_outbox` sends what is due to a real
SMTP server on 127.0.0.1 (aiosmtpd), retries failures with back-off, and
delivers every message exactly once when the server is down and then up.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from randomizer.errors import InvalidInput, KeyFileError
from randomizer.mail import (
    CLAIM_SECONDS,
    DeliveryReport,
    MailSettings,
    backoff,
    deliver_outbox,
    load_mail_settings,
    parse_mail_settings,
)
from randomizer.store import Store
from tests.support.assertions import assert_error
from tests.support.database import audit_rows, execute
from tests.support.exosome import arm_words_in
from tests.support.processes import cli_process, finish
from tests.support.smtp import Mailbox, certificate, free_port, smtp_server
from tests.support.trial import Run

REASON = "anaphylaxis after infusion"
SENDER = "randomizer@trial.example.org"
SAFETY = ("safety@sponsor.example.org", "pi@site.example.org")


def settings_for(port: int, **changes: object) -> MailSettings:
    settings = MailSettings(
        host="127.0.0.1",
        port=port,
        security="none",
        sender=SENDER,
        recipients=SAFETY,
        timeout=10.0,
        retry_first=timedelta(minutes=1),
        retry_max=timedelta(minutes=8),
    )
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(run: Run, unblinded: list[str]) -> Iterator[Store]:
    """The trial's database, once its two messages are queued."""
    database = Store(run.files.db_url)
    yield database
    database.dispose()


@pytest.fixture
def unblinded(run: Run, by_arm: dict[str, str]) -> list[str]:
    """One participant of each arm, unblinded in an emergency by ivan: two messages."""
    participants = [by_arm[arm] for arm in sorted(by_arm)]
    for participant in participants:
        run.ok("unblind", "emergency", participant, "--reason", REASON, user="ivan")
    return participants


def outbox(run: Run) -> list[tuple[str, str, int]]:
    return [
        (message_id, status, attempts)
        for message_id, status, attempts in execute(
            run.files.db_url, "SELECT message_id, status, attempts FROM mail_outbox ORDER BY id"
        )
    ]


def _ids(messages: list[EmailMessage]) -> list[str]:
    return sorted(str(m["Message-ID"]) for m in messages)


def test_each_unblinding_queues_one_message_in_its_transaction(
    run: Run, by_arm: dict[str, str]
) -> None:
    participant = by_arm[sorted(by_arm)[0]]
    run("unblind", "emergency", participant, "--reason", " ", user="ivan")
    run("unblind", "emergency", participant, "--reason", REASON, user="mona")
    assert outbox(run) == []  # refused unblindings queue nothing
    run.ok("unblind", "emergency", participant, "--reason", REASON, user="ivan")
    [(message_id, status, attempts)] = outbox(run)
    assert (status, attempts) == ("pending", 0)
    assert re.fullmatch(r"<unblinding-1\.[0-9a-f]{16}@exosome-ms\.randomizer\.invalid>", message_id)


def test_a_server_that_is_down_then_up_gets_every_message_exactly_once(
    run: Run, store: Store, unblinded: list[str]
) -> None:
    port = free_port()
    settings = settings_for(port)
    now = datetime.now(UTC)
    # down: the first attempt fails to connect and the run stops there; nothing is lost
    assert deliver_outbox(store, settings, now) == DeliveryReport(sent=0, failed=1, pending=2)
    [(error,)] = execute(run.files.db_url, "SELECT last_error FROM mail_outbox WHERE attempts = 1")
    assert error.startswith("ConnectionRefusedError")
    assert [attempts for _, _, attempts in outbox(run)] == [1, 0]
    # the next run tries the other one; the first waits for its back-off (60 s, then 120 s)
    assert deliver_outbox(store, settings, now + timedelta(seconds=30)) == DeliveryReport(0, 1, 2)
    assert [attempts for _, _, attempts in outbox(run)] == [1, 1]
    assert deliver_outbox(store, settings, now + timedelta(seconds=59)) == DeliveryReport(0, 0, 2)
    assert deliver_outbox(store, settings, now + timedelta(seconds=60)) == DeliveryReport(0, 1, 2)
    assert [attempts for _, _, attempts in outbox(run)] == [2, 1]
    assert deliver_outbox(store, settings, now + timedelta(seconds=179)) == DeliveryReport(0, 1, 2)
    assert [attempts for _, _, attempts in outbox(run)] == [2, 2]
    with smtp_server(port) as mailbox:
        later = now + timedelta(hours=1)
        assert deliver_outbox(store, settings, later) == DeliveryReport(sent=2, failed=0, pending=0)
        assert deliver_outbox(store, settings, later + timedelta(days=1)) == DeliveryReport(0, 0, 0)
    assert _ids(mailbox.received) == sorted(m for m, _, _ in outbox(run))
    assert [status for _, status, _ in outbox(run)] == ["sent", "sent"]
    assert mailbox.envelopes == [(SENDER, list(SAFETY))] * 2


def test_a_server_that_refuses_then_recovers_gets_every_message_exactly_once(
    run: Run, store: Store, unblinded: list[str]
) -> None:
    port = free_port()
    settings = settings_for(port)
    now = datetime.now(UTC)
    with smtp_server(port, Mailbox(refusing=True)) as mailbox:
        # a temporary refusal of one message does not stop the run: both are tried
        assert deliver_outbox(store, settings, now) == DeliveryReport(sent=0, failed=2, pending=2)
        assert mailbox.refused == 2 and mailbox.received == []
        errors = execute(run.files.db_url, "SELECT last_error FROM mail_outbox")
        assert all("451" in error for (error,) in errors)
        mailbox.refusing = False
        assert deliver_outbox(store, settings, now + backoff(settings, 1)) == DeliveryReport(
            2, 0, 0
        )
        assert deliver_outbox(store, settings, now + timedelta(days=1)) == DeliveryReport(0, 0, 0)
    assert _ids(mailbox.received) == sorted(m for m, _, _ in outbox(run))
    assert len(mailbox.received) == 2


def test_messages_of_both_arms_differ_only_in_participant_and_time(
    run: Run, store: Store, unblinded: list[str]
) -> None:
    port = free_port()
    with smtp_server(port) as mailbox:
        deliver_outbox(store, settings_for(port), datetime.now(UTC))
    reviews = execute(run.files.db_url, "SELECT id, unblinded_at FROM unblinding_reviews")
    events = [e for e in audit_rows(run.files.db_url) if e["action"] == "unblind.emergency"]
    normalised = []
    for message, participant, (review, _), event in zip(
        mailbox.received, unblinded, reviews, events, strict=True
    ):
        text = message.as_string()
        assert arm_words_in(text) == []
        body = message.get_content().replace("\r\n", "\n")
        assert f"Participant: {participant}\n" in body and f"Time (UTC):  {event['at']}\n" in body
        assert f"Reason:      {REASON}\n" in body and "User:        ivan\n" in body
        assert "Site:        WAW\n" in body
        headers = {k: str(v) for k, v in message.items() if k not in ("Message-ID", "Date")}
        normalised.append(
            json.dumps([headers, body])
            .replace(participant, "<participant>")
            .replace(event["at"], "<time>")
            .replace(f"item {review}", "item <n>")
            .replace(f"close {review}", "close <n>")
        )
    assert normalised[0] == normalised[1]


def test_starttls_and_login(run: Run, store: Store, unblinded: list[str], tmp_path: Path) -> None:
    port = free_port()
    cert, key = certificate(tmp_path)
    secure = settings_for(
        port, security="starttls", username="notifier", password="s3cret-pass", ca_file=cert
    )
    now = datetime.now(UTC)
    with smtp_server(port, tls=(cert, key), login=("notifier", "s3cret-pass")) as mailbox:
        wrong = settings_for(
            port, security="starttls", username="notifier", password="wrong", ca_file=cert
        )
        assert deliver_outbox(store, wrong, now) == DeliveryReport(0, 1, 2)
        [(error,)] = execute(
            run.files.db_url, "SELECT last_error FROM mail_outbox WHERE attempts = 1"
        )
        assert error.startswith("SMTPAuthenticationError")
        untrusted = settings_for(port, security="starttls", username="notifier", password="x")
        assert deliver_outbox(store, untrusted, now + timedelta(hours=1)).failed == 1
        assert mailbox.logins == []
        assert deliver_outbox(store, secure, now + timedelta(days=1)) == DeliveryReport(2, 0, 0)
    assert mailbox.logins == ["notifier"] and len(mailbox.received) == 2


def test_mail_send_command_is_for_admins_and_sends(
    run: Run, unblinded: list[str], tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "mail.toml"
    config.write_text(
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        f'sender = "{SENDER}"\n[notify]\nto = ["{SAFETY[0]}"]\n',
        encoding="utf-8",
    )
    assert (
        assert_error(run("mail", "send", "--config", str(config), user="ivan"), 1)
        == "role investigator may not send the notification e-mails"
    )
    with smtp_server(port) as mailbox:
        result = run.ok("mail", "send", "--config", str(config), "--json", user="alice")
    assert json.loads(result.stdout) == {"sent": 2, "failed": 0, "pending": 0}
    assert len(mailbox.received) == 2
    [event] = [e for e in audit_rows(run.files.db_url) if e["action"] == "mail.send"]
    assert (event["user"], event["details"]) == ("alice", {"pending": 2})
    assert run.ok("mail", "send", "--config", str(config), user="alice").stdout == (
        "0 sent, 0 failed (tried again later), 0 pending\n"
    )


BASE = '[smtp]\nhost = "mail.example.org"\nsender = "r@example.org"\n[notify]\nto = ["a@b.org"]\n'


def test_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = parse_mail_settings(BASE, "mail.toml")
    assert (parsed.port, parsed.security, parsed.username, parsed.recipients) == (
        587,
        "starttls",
        None,
        ("a@b.org",),
    )
    secret = tmp_path / "smtp-password"
    secret.write_text("pw-from-file\n", encoding="utf-8")
    secret.chmod(0o600)
    config = tmp_path / "mail.toml"
    config.write_text(
        BASE.replace("[notify]", 'username = "u"\npassword_file = "smtp-password"\n[notify]'),
        encoding="utf-8",
    )
    loaded = load_mail_settings(config)
    assert (loaded.username, loaded.password) == ("u", "pw-from-file")
    assert "pw-from-file" not in repr(loaded)
    secret.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_mail_settings(config)
    monkeypatch.setenv("SMTP_PW", "pw-from-env")
    env = BASE.replace("[notify]", 'username = "u"\npassword_env = "SMTP_PW"\n[notify]')
    assert parse_mail_settings(env, "m").password == "pw-from-env"
    refusals = {
        BASE.replace("[notify]", 'password = "x"\n[notify]'): "do not write the SMTP password",
        BASE.replace("[notify]", 'security = "none"\n[notify]'): "without TLS",
        BASE.replace('["a@b.org"]', "[]"): "at least one e-mail address",
        BASE.replace("[notify]", 'username = "u"\n[notify]'): "needs 'password_file'",
        BASE.replace("[notify]", "port = 0\n[notify]"): "'port' must be from 1 to 65535",
        BASE + "[retry]\nfirst_seconds = 0\n": "0 < first_seconds",
        "smtp = 1": "needs an [smtp] table",
    }
    for text, message in refusals.items():
        with pytest.raises(InvalidInput, match=re.escape(message)):
            parse_mail_settings(text, "m")


def test_backoff_doubles_up_to_its_ceiling() -> None:
    settings = settings_for(25)
    assert [backoff(settings, n).total_seconds() for n in range(1, 7)] == [
        60,
        120,
        240,
        480,
        480,
        480,
    ]


def test_a_crash_after_the_accept_sends_again_with_the_same_message_id(
    run: Run, unblinded: list[str], tmp_path: Path
) -> None:
    """At least once: a sender killed between the SMTP accept and its commit resends."""
    port = free_port()
    config = tmp_path / "mail.toml"
    config.write_text(
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        f'sender = "{SENDER}"\n[notify]\nto = ["{SAFETY[0]}"]\n',
        encoding="utf-8",
    )
    files = run.files
    send = ("mail", "send", "--config", str(config))
    with smtp_server(port) as mailbox:
        killed = finish(
            cli_process(files.db_url, files.key_file, "alice", *send, fault="mail.send:accepted")
        )
        assert killed.code == -signal.SIGKILL
        [first] = mailbox.received
        assert [status for _, status, _ in outbox(run)] == ["pending", "pending"]
        # the claim lapses after CLAIM_SECONDS; then the next run sends both
        later = datetime.now(UTC) + timedelta(seconds=CLAIM_SECONDS)
        store = Store(files.db_url)
        try:
            assert deliver_outbox(store, settings_for(port), later) == DeliveryReport(2, 0, 0)
        finally:
            store.dispose()
    ids = [str(m["Message-ID"]) for m in mailbox.received]
    # the first message came twice, recognisably: the same Message-ID
    assert len(ids) == 3 and ids.count(str(first["Message-ID"])) == 2
    assert sorted(set(ids)) == sorted(m for m, _, _ in outbox(run))
