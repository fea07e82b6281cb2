"""A real SMTP server on 127.0.0.1 for the mail tests (aiosmtpd), and what it received.

It can refuse every message with a temporary error until told to accept, ask
for STARTTLS with a self-signed certificate, and ask for a login.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.tls import self_signed


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Mailbox:
    """What the server accepted, and whether it refuses for now."""

    refusing: bool = False
    received: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    refused: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        """Accept the message, or refuse it with a temporary error while ``refusing``."""
        if self.refusing:
            self.refused += 1
            return "451 4.3.0 mail system busy, try again later"
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(parsed)
        self.envelopes.append((str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos]))
        return "250 OK"


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its private key."""
    return self_signed(directory, "smtp")


@contextmanager
def smtp_server(
    port: int,
    mailbox: Mailbox | None = None,
    tls: tuple[Path, Path] | None = None,
    login: tuple[str, str] | None = None,
) -> Iterator[Mailbox]:
    """Run an SMTP server on 127.0.0.1:``port`` until the block ends.

    ``tls`` (certificate, key) makes it offer and require STARTTLS; ``login``
    (user, password) makes it require that login (over TLS when ``tls`` is given).
    """
    box = mailbox or Mailbox()
    options: dict[str, Any] = {}
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        options.update(tls_context=context, require_starttls=True)
    if login is not None:

        def authenticator(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            assert isinstance(data, LoginPassword)
            ok = (data.login.decode(), data.password.decode()) == login
            if ok:
                box.logins.append(data.login.decode())
            return AuthResult(success=ok, handled=False)

        options.update(
            authenticator=authenticator, auth_required=True, auth_require_tls=tls is not None
        )
    controller = Controller(box, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
