"""Commands of the notification e-mails: mail send."""

from __future__ import annotations

from pathlib import Path

import click

from randomizer.commands.base import Settings, emit, json_option, pass_settings
from randomizer.mail import load_mail_settings


@click.group()
def mail() -> None:
    """Notification e-mails of emergency unblindings (the outbox).

    Example: randomizer --user alice mail send --config /etc/randomizer/mail.toml
    """


@mail.command("send")
@click.option(
    "--config",
    "config",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="RANDOMIZER_MAIL_CONFIG",
    help="SMTP settings (TOML, see docs/operations.md) [env: RANDOMIZER_MAIL_CONFIG].",
)
@json_option
@pass_settings
def mail_send(settings: Settings, config: Path) -> None:
    """Send the notification e-mails that are due, retrying failed ones (admin; on the host).

    For cron when the server does not send them itself (serve --mail-config).
    Example: randomizer --user alice mail send --config /etc/randomizer/mail.toml
    """
    mail_settings = load_mail_settings(config)
    result = settings.custody().send_mail(mail_settings)
    emit(
        settings,
        result,
        f"{result.sent} sent, {result.failed} failed (tried again later), {result.pending} pending",
    )
