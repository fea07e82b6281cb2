"""The server sends the notification e-mails itself when it has SMTP settings."""

from __future__ import annotations

import time
from pathlib import Path

from randomizer.backends.http import HttpBackend
from randomizer.context import Credentials
from randomizer.signatures import Signature, meaning_of
from tests.backends.live import live_server
from tests.support.database import execute
from tests.support.smtp import free_port, smtp_server
from tests.support.trial import PASSWORDS, Run


def test_the_server_sends_an_unblinding_notification_in_the_background(
    run: Run, by_arm: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "mail.toml"
    config.write_text(
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        'sender = "randomizer@example.org"\n[notify]\nto = ["safety@example.org"]\n'
        "[retry]\ninterval_seconds = 0.1\n",
        encoding="utf-8",
    )
    participant = by_arm[sorted(by_arm)[0]]
    files = run.files
    with (
        smtp_server(port) as mailbox,
        live_server(files.db_url, files.key_file, mail_config=config) as url,
    ):
        ivan = HttpBackend(url, credentials=lambda: Credentials("ivan", PASSWORDS["ivan"]))
        try:
            ivan.emergency_unblind(
                participant,
                "anaphylaxis",
                signature=Signature(PASSWORDS["ivan"], meaning_of("unblind.emergency")),
            )
        finally:
            ivan.close()
        deadline = time.monotonic() + 30  # a bound on waiting, not an assertion on time
        while not mailbox.received and time.monotonic() < deadline:
            time.sleep(0.05)
    [message] = mailbox.received
    [(message_id, status)] = execute(files.db_url, "SELECT message_id, status FROM mail_outbox")
    assert (str(message["Message-ID"]), status) == (message_id, "sent")
    assert f"Participant: {participant}" in message.get_content()
