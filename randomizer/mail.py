"""Notification e-mails: SMTP settings, and the sender that drains the outbox.

An event that must be notified (an emergency unblinding) writes its message
into the ``mail_outbox`` table in its own transaction, so the event and its
message commit together or not at all, and a mail server that is down delays
nothing. :func:`deliver_outbox` sends what is due with the standard library's
:mod:`smtplib` (STARTTLS or implicit TLS, and login), to the recipients of the
settings file, and records every attempt; a failed message is tried again
after a back-off that doubles with each attempt up to a ceiling.

Delivery is at least once, not exactly once. A message is marked sent in a
transaction of its own right after the SMTP server accepted it; a crash (or a
lost database) between the server's accept and that commit sends it again on
the next run. Each message carries a fixed ``Message-ID``, written with it in
the outbox, so such a duplicate is recognisable as a copy of the same message.
The other order (mark first, then send) would lose a message on a crash, which
for a safety notification is worse. Two senders at once (the server and a cron
job) do not both send one message: a sender claims a message for
:data:`CLAIM_SECONDS` before it connects.

No message holds an arm: the outbox is written from the participant's plain
columns (:func:`randomizer.unblinding.review.notification`).
"""

from __future__ import annotations

import ipaddress
import os
import smtplib
import ssl
import stat
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from randomizer.context import fault_point
from randomizer.errors import InvalidInput, KeyFileError
from randomizer.models import OutboxMessage
from randomizer.store import Store

SECURITY = ("starttls", "ssl", "none")
"""How the sender talks to the SMTP server: STARTTLS on a plain port (587), implicit
TLS (465), or no TLS at all, which is allowed to a loopback relay only."""

CLAIM_SECONDS = 300
"""How long a sender holds a message it is sending before another sender may take it."""

ERROR_MAX = 500
"""Longest error text an attempt records."""


@dataclass(frozen=True)
class MailSettings:
    """Where and how to send notifications, read from the mail settings file."""

    host: str
    sender: str
    recipients: tuple[str, ...]
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    timeout: float = 30.0
    retry_first: timedelta = timedelta(minutes=1)
    retry_max: timedelta = timedelta(hours=1)
    interval: float = 30.0
    """Seconds between two runs of the server's background sender."""


@dataclass(frozen=True)
class DeliveryReport:
    """What one run of the sender did: messages sent, attempts failed, messages still pending."""

    sent: int
    failed: int
    pending: int


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _private_text(path: Path) -> str:
    """The first line of a password file that only its owner may read."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise KeyFileError(f"cannot read SMTP password file {path}: {error.strerror}") from None
    if os.name != "nt" and mode & 0o077:
        raise KeyFileError(
            f"SMTP password file {path} is readable by others (mode {mode:04o}): chmod 600 {path}"
        )
    return text.splitlines()[0] if text else ""


def _get(table: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    value = table.get(key, default)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise InvalidInput(f"{where}: '{key}' must be a {kind.__name__}")
    return value


def parse_mail_settings(text: str, where: str, base: Path | None = None) -> MailSettings:
    """Mail settings from the TOML text of a settings file (format in docs/operations.md).

    The SMTP password is never in the file itself and never in the database:
    ``password_file`` names a file only its owner may read (relative to the
    settings file), or ``password_env`` an environment variable.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidInput(f"{where}: not valid TOML ({error})") from None
    unknown = set(data) - {"smtp", "notify", "retry"}
    if unknown:
        raise InvalidInput(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    smtp = data.get("smtp")
    notify = data.get("notify", {})
    retry = data.get("retry", {})
    if not isinstance(smtp, dict) or not isinstance(notify, dict) or not isinstance(retry, dict):
        raise InvalidInput(f"{where}: needs an [smtp] table (and [notify], [retry] tables)")
    host = _get(smtp, "host", str, where)
    sender = _get(smtp, "sender", str, where)
    if not host or not sender:
        raise InvalidInput(f"{where}: [smtp] needs 'host' and 'sender'")
    security = _get(smtp, "security", str, where, "starttls")
    if security not in SECURITY:
        raise InvalidInput(f"{where}: 'security' must be one of {', '.join(SECURITY)}")
    port = _get(smtp, "port", int, where, 465 if security == "ssl" else 587)
    if not 1 <= port <= 65535:
        raise InvalidInput(f"{where}: 'port' must be from 1 to 65535")
    recipients = notify.get("to", [])
    if (
        not isinstance(recipients, list)
        or not recipients
        or not all(isinstance(r, str) and "@" in r for r in recipients)
    ):
        raise InvalidInput(f"{where}: [notify] 'to' must list at least one e-mail address")
    username = _get(smtp, "username", str, where)
    password: str | None = None
    if "password" in smtp:
        raise InvalidInput(
            f"{where}: do not write the SMTP password into the settings file: "
            "use 'password_file' (mode 0600) or 'password_env'"
        )
    if (file := _get(smtp, "password_file", str, where)) is not None:
        path = Path(file)
        password = _private_text(path if path.is_absolute() or base is None else base / path)
    elif (variable := _get(smtp, "password_env", str, where)) is not None:
        password = os.environ.get(variable)
        if password is None:
            raise InvalidInput(f"{where}: environment variable {variable} is not set")
    if username is not None and password is None:
        raise InvalidInput(f"{where}: a 'username' needs 'password_file' or 'password_env'")
    if security == "none" and not _is_loopback(host):
        raise InvalidInput(
            f"{where}: refusing to send to {host} without TLS: use security = "
            "'starttls' or 'ssl' (plain SMTP only to a relay on this host)"
        )
    ca_file = _get(smtp, "ca_file", str, where)
    first = _get(retry, "first_seconds", float, where, 60.0)
    ceiling = _get(retry, "max_seconds", float, where, 3600.0)
    interval = _get(retry, "interval_seconds", float, where, 30.0)
    if not 0 < first <= ceiling or interval <= 0:
        raise InvalidInput(
            f"{where}: [retry] needs 0 < first_seconds <= max_seconds and interval_seconds > 0"
        )
    return MailSettings(
        host=host,
        port=port,
        security=security,
        sender=sender,
        recipients=tuple(recipients),
        username=username,
        password=password,
        ca_file=None if ca_file is None else Path(ca_file),
        timeout=_get(smtp, "timeout", float, where, 30.0),
        retry_first=timedelta(seconds=first),
        retry_max=timedelta(seconds=ceiling),
        interval=interval,
    )


def load_mail_settings(path: Path) -> MailSettings:
    """Mail settings from the file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidInput(f"cannot read mail settings {path}: {error.strerror}") from None
    return parse_mail_settings(text, str(path), path.parent)


def backoff(settings: MailSettings, attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt: doubling, capped."""
    wait: timedelta = settings.retry_first * 2 ** min(attempts - 1, 20)
    return min(wait, settings.retry_max)


def email_of(settings: MailSettings, message: OutboxMessage) -> EmailMessage:
    """The e-mail of one outbox message, addressed to the settings' recipients."""
    mail = EmailMessage()
    mail["From"] = settings.sender
    mail["To"] = ", ".join(settings.recipients)
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(message.created_at)
    mail["Message-ID"] = message.message_id
    mail.set_content(message.body)
    return mail


def _connect(settings: MailSettings) -> smtplib.SMTP:
    context = ssl.create_default_context(
        cafile=None if settings.ca_file is None else str(settings.ca_file)
    )
    client: smtplib.SMTP
    if settings.security == "ssl":
        client = smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout, context=context
        )
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    try:
        if settings.security == "starttls":
            client.starttls(context=context)
        if settings.username is not None and settings.password is not None:
            client.login(settings.username, settings.password)
    except BaseException:
        client.close()
        raise
    return client


def _due(now: datetime) -> Any:
    return (OutboxMessage.status == "pending") & (OutboxMessage.next_attempt_at <= now)


def deliver_outbox(store: Store, settings: MailSettings, now: datetime) -> DeliveryReport:
    """Send every pending message that is due at ``now``, recording each attempt.

    A message is claimed, sent and marked sent, each database step in a
    transaction of its own and the SMTP exchange outside any. A failure puts
    the message back with its attempt counted and its next try
    :func:`backoff` later. The run stops at the first failure to reach the
    server at all (the rest are tried on the next run).
    """
    with store.transaction(read_only=True) as session:
        due = list(
            session.scalars(select(OutboxMessage.id).where(_due(now)).order_by(OutboxMessage.id))
        )
    sent = failed = 0
    client: smtplib.SMTP | None = None
    try:
        for message_id in due:
            with store.transaction() as session:
                claimed = session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == message_id, _due(now))
                    .values(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
                )
                if getattr(claimed, "rowcount", 0) != 1:
                    continue  # another sender took it
                message = session.get_one(OutboxMessage, message_id)
                mail = email_of(settings, message)
                attempts = message.attempts + 1
            try:
                if client is None:
                    client = _connect(settings)
                refused = client.send_message(
                    mail, from_addr=settings.sender, to_addrs=list(settings.recipients)
                )
            except (smtplib.SMTPException, OSError) as error:
                failed += 1
                _record_failure(store, settings, message_id, attempts, now, error)
                if client is None or isinstance(error, smtplib.SMTPServerDisconnected):
                    break
                continue
            fault_point("mail.send:accepted")
            with store.transaction() as session:
                row = session.get_one(OutboxMessage, message_id)
                row.status = "sent"
                row.sent_at = now
                row.attempts = attempts
                row.sent_to = ", ".join(settings.recipients)
                row.last_error = (
                    None if not refused else f"refused by the server: {', '.join(sorted(refused))}"
                )
            sent += 1
    finally:
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    return DeliveryReport(sent=sent, failed=failed, pending=pending_messages(store))


def _record_failure(
    store: Store,
    settings: MailSettings,
    message_id: int,
    attempts: int,
    now: datetime,
    error: BaseException,
) -> None:
    with store.transaction() as session:
        row = session.get_one(OutboxMessage, message_id)
        row.attempts = attempts
        row.next_attempt_at = now + backoff(settings, attempts)
        row.last_error = f"{type(error).__name__}: {error}"[:ERROR_MAX]


def pending_messages(store: Store) -> int:
    """How many messages wait in the outbox."""
    with store.transaction(read_only=True) as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status == "pending")
            )
            or 0
        )
