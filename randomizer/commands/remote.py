"""Commands of the server and its clients: serve, login, logout."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from randomizer.backends.http import HttpBackend, check_server_url, remove_token, save_token
from randomizer.commands.base import Settings, emit, json_option, pass_settings, read_password
from randomizer.errors import InvalidInput
from randomizer.results import Credentials


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; other than loopback needs TLS or --behind-proxy.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Worker processes."
)
@click.option(
    "--certfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TLS certificate (PEM).",
)
@click.option(
    "--keyfile",
    "tls_keyfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TLS private key (PEM) of --certfile.",
)
@click.option(
    "--behind-proxy",
    is_flag=True,
    help="A TLS-terminating proxy is in front: trust its forwarded headers.",
)
@click.option(
    "--proxy-address",
    default="127.0.0.1",
    show_default=True,
    help="The only address whose forwarded headers are trusted.",
)
@click.option(
    "--token-idle-minutes",
    type=click.IntRange(1, 24 * 60),
    default=30,
    show_default=True,
    help="A login ends after this long unused.",
)
@click.option(
    "--token-hours",
    type=click.IntRange(1, 7 * 24),
    default=12,
    show_default=True,
    help="A login ends after this long whatever its use.",
)
@click.option(
    "--mail-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="RANDOMIZER_MAIL_CONFIG",
    help="SMTP settings (TOML, see docs/operations.md): the server then sends the "
    "notification e-mails itself [env: RANDOMIZER_MAIL_CONFIG].",
)
@pass_settings
def serve(
    settings: Settings,
    host: str,
    port: int,
    workers: int,
    certfile: Path | None,
    tls_keyfile: Path | None,
    behind_proxy: bool,
    proxy_address: str,
    token_idle_minutes: int,
    token_hours: int,
    mail_config: Path | None,
) -> None:
    """Run the trial server: it alone opens the key file and the database.

    Users then work with 'randomizer --server URL login' and any command with
    --server URL. Run it as the service account that alone can read both.
    Example: randomizer --db sqlite:///trial.db --key-file trial.key serve --port 8000
    """
    from randomizer.server.main import ServeOptions
    from randomizer.server.main import serve as run_server

    if settings.server:
        raise InvalidInput("serve runs the server itself: drop --server")
    run_server(
        ServeOptions(
            db_url=settings.db,
            key_file=settings.key_file,
            host=host,
            port=port,
            workers=workers,
            certfile=certfile,
            keyfile=tls_keyfile,
            behind_proxy=behind_proxy,
            proxy_address=proxy_address,
            token_idle=timedelta(minutes=token_idle_minutes),
            token_absolute=timedelta(hours=token_hours),
            mail_config=mail_config,
        )
    )


def _server(settings: Settings) -> str:
    if not settings.server:
        raise InvalidInput("no server: pass --server URL or set RANDOMIZER_SERVER")
    return check_server_url(settings.server)


@click.command()
@json_option
@pass_settings
def login(settings: Settings) -> None:
    """Log in to the trial server and keep the token in a file only you can read.

    Example: randomizer --server https://trial.example.org --user ivan login
    """
    server = _server(settings)
    if not settings.user:
        raise InvalidInput("no user: pass --user NAME or set RANDOMIZER_USER")
    credentials = Credentials(settings.user, read_password(f"Password for {settings.user}"))
    client = HttpBackend(server)
    try:
        token = client.login(credentials)
    finally:
        client.close()
    path = save_token(server, settings.user, token)
    emit(
        settings,
        {"server": server, "user": settings.user, "token_file": str(path)},
        f"Logged in to {server} as {settings.user}; token kept in {path}.",
    )


@click.command()
@json_option
@pass_settings
def logout(settings: Settings) -> None:
    """End the login to the trial server and delete the token file.

    Example: randomizer --server https://trial.example.org logout
    """
    server = _server(settings)
    backend = settings.remote()
    try:
        backend.logout()
    finally:
        removed = remove_token(server)
    emit(
        settings,
        {"server": server, "logged_out": True, "token_file_removed": removed},
        f"Logged out of {server}.",
    )
