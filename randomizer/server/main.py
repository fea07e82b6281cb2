"""Starting the server: the deployment rules, the held key, uvicorn.

The server binds to loopback unless told otherwise; on any other address it
needs TLS (``certfile``/``keyfile``) or an explicit ``behind_proxy``, and then
trusts forwarded headers only from the configured proxy address. The key file
is read once, here; it and the TLS key file must be private to the service
account.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from randomizer import sessions
from randomizer.context import load_trial, vault_for
from randomizer.errors import InvalidInput, KeyFileError
from randomizer.mail import load_mail_settings
from randomizer.server.app import create_app
from randomizer.server.state import ServerState
from randomizer.store import Store
from randomizer.vault import read_key_file

CONFIG_ENV = "RANDOMIZER_SERVE_CONFIG"
"""How ``serve --workers N`` hands its settings to each worker process."""


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``randomizer serve`` was asked for."""

    db_url: str
    key_file: Path
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    certfile: Path | None = None
    keyfile: Path | None = None
    behind_proxy: bool = False
    proxy_address: str = "127.0.0.1"
    token_idle: timedelta = sessions.IDLE_TIMEOUT
    token_absolute: timedelta = sessions.ABSOLUTE_TIMEOUT
    mail_config: Path | None = None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_deployment(options: ServeOptions) -> None:
    """Refuse a listening address that would send passwords and tokens in clear text."""
    if (options.certfile is None) != (options.keyfile is None):
        raise InvalidInput("TLS needs both a certificate file and its key file")
    if options.workers < 1:
        raise InvalidInput("the number of workers must be at least 1")
    if not is_loopback(options.host) and options.certfile is None and not options.behind_proxy:
        raise InvalidInput(
            f"refusing to listen on {options.host} without TLS: give a "
            "certificate and key, or say that a TLS proxy is in front"
        )
    if options.keyfile is not None:
        check_tls_key(options.keyfile)


def check_tls_key(path: Path) -> None:
    """Refuse a TLS private key that anyone but its owner may read, as ssh refuses one."""
    if os.name == "nt":
        return  # no mode bits: the folder's ACL decides
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as error:
        raise KeyFileError(f"cannot read TLS key file {path}: {error.strerror}") from None
    if mode & 0o077:
        who = "others" if mode & 0o007 else "its group"
        raise KeyFileError(
            f"TLS key file {path} is accessible by {who} (mode {mode:04o}): "
            f"chmod 600 {path}, owned by the account that runs the server"
        )


def open_state(options: ServeOptions) -> ServerState:
    """Read the key file once, open the database and check that the key opens this trial."""
    trial_key = read_key_file(options.key_file)
    mail = None if options.mail_config is None else load_mail_settings(options.mail_config)
    store = Store(options.db_url)
    try:
        with store.transaction(read_only=True) as session:
            store.check_schema(session)
            vault_for(load_trial(session), trial_key)
    except BaseException:
        store.dispose()
        raise
    return ServerState(
        store=store,
        trial_key=trial_key,
        token_idle=options.token_idle,
        token_absolute=options.token_absolute,
        mail=mail,
    )


def _options_to_env(options: ServeOptions) -> str:
    return json.dumps(
        {
            "db_url": options.db_url,
            "key_file": str(options.key_file),
            "idle": options.token_idle.total_seconds(),
            "absolute": options.token_absolute.total_seconds(),
            "mail_config": None if options.mail_config is None else str(options.mail_config),
        }
    )


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``serve --workers N`` (uvicorn's factory)."""
    config = json.loads(os.environ[CONFIG_ENV])
    options = ServeOptions(
        db_url=config["db_url"],
        key_file=Path(config["key_file"]),
        token_idle=timedelta(seconds=config["idle"]),
        token_absolute=timedelta(seconds=config["absolute"]),
        mail_config=None if config.get("mail_config") is None else Path(config["mail_config"]),
    )
    return create_app(open_state(options))


def serve(options: ServeOptions) -> None:
    """Run the server until it is stopped (Ctrl-C or SIGTERM); start and stop are audited."""
    check_deployment(options)
    common: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "server_header": False,
        "proxy_headers": options.behind_proxy,
        "forwarded_allow_ips": options.proxy_address if options.behind_proxy else "",
        "ssl_certfile": str(options.certfile) if options.certfile else None,
        "ssl_keyfile": str(options.keyfile) if options.keyfile else None,
        "log_level": "info",
        "timeout_graceful_shutdown": 10,
    }
    if options.workers == 1:
        uvicorn.run(create_app(open_state(options)), **common)
        return
    open_state(options).store.dispose()  # fail here, once, rather than in every worker
    os.environ[CONFIG_ENV] = _options_to_env(options)
    uvicorn.run(
        "randomizer.server.main:app_from_environment",
        factory=True,
        workers=options.workers,
        **common,
    )
