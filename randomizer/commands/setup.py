"""Commands of trial setup and custody: init, user, key."""

from __future__ import annotations

import sys

import click

from randomizer.access import Role, parse_role
from randomizer.commands.base import (
    Settings,
    check_password_length,
    emit,
    json_option,
    pass_settings,
    read_password,
    reason_option,
    table,
)
from randomizer.design import design_text
from randomizer.errors import InvalidInput


@click.command()
@click.option(
    "--design",
    "design_ref",
    required=True,
    help="Shipped design name (exosome-ms) or a design TOML file.",
)
@click.option("--admin", required=True, help="Name of the first admin (list custodian).")
@json_option
@pass_settings
def init(settings: Settings, design_ref: str, admin: str) -> None:
    """Create the trial database, its key file (mode 0600) and the first admin.

    Example: RANDOMIZER_PASSWORD=... randomizer init --design exosome-ms --admin alice
    """
    custody = settings.custody()  # refuses --server before asking for a password
    password = read_password(f"Password for new admin {admin}", confirm=True)
    result = custody.init(design_text(design_ref), design_ref, admin, password)
    emit(
        settings,
        result,
        lambda: (
            f"Trial {result.trial} created in {result.database}\n"
            f"Key file {result.key_file} written (mode 0600): keep it outside the database "
            "host's backups; without it nothing sealed can be read.\n"
            f"Admin {result.admin} can now add users and generate the list."
        ),
    )


@click.group()
def user() -> None:
    """Manage users and roles (admin).

    Example: randomizer --user alice user list
    """


def _new_password(password_stdin: bool, name: str) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise InvalidInput("--password-stdin: no password on standard input")
        return check_password_length(line.rstrip("\r\n"))
    if not sys.stdin.isatty():
        raise InvalidInput("no password for the new user: use --password-stdin")
    return check_password_length(
        str(click.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True))
    )


@user.command("add")
@click.argument("name")
@click.option(
    "--role",
    "role_text",
    required=True,
    help="admin, investigator, pharmacist, statistician or monitor.",
)
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin.")
@click.option(
    "--site",
    "sites",
    multiple=True,
    metavar="SITE",
    help="Limit the user to this site (repeat for several); without it the user is trial-wide.",
)
@json_option
@pass_settings
def user_add(
    settings: Settings, name: str, role_text: str, password_stdin: bool, sites: tuple[str, ...]
) -> None:
    """Add a user, trial-wide or limited to sites.

    Example: echo "$PW" | randomizer user add bob --role investigator --site WAW --password-stdin
    """
    role: Role = parse_role(role_text)
    password = _new_password(password_stdin, name)
    info = settings.backend().add_user(name, role, password, sites)
    limited = _where(info.sites) if info.sites else ""
    emit(settings, info, f"User {info.name} added as {info.role}{limited}.")


def _where(sites: tuple[str, ...]) -> str:
    """How a user's sites read in a sentence."""
    return f", limited to site {', '.join(sites)}" if sites else ", trial-wide"


@user.command("sites")
@click.argument("name")
@click.option(
    "--set",
    "new_sites",
    multiple=True,
    metavar="SITE",
    help="Limit the user to this site instead (repeat for several).",
)
@click.option("--trial-wide", is_flag=True, help="Lift the user's site limit.")
@json_option
@pass_settings
def user_sites(settings: Settings, name: str, new_sites: tuple[str, ...], trial_wide: bool) -> None:
    """Show the sites a user is limited to, or change them (audited).

    Example: randomizer user sites ivan --set WAW --set KRK
    """
    if new_sites and trial_wide:
        raise click.UsageError("give --set SITE or --trial-wide, not both")
    backend = settings.backend()
    if new_sites or trial_wide:
        info = backend.set_user_sites(name, new_sites)
        text = f"User {info.name} is now{_where(info.sites).lstrip(',')}."
    else:
        info = backend.user_sites(name)
        text = f"User {info.name} ({info.role}) is{_where(info.sites).lstrip(',')}."
    emit(settings, info, text)


@user.command("list")
@json_option
@pass_settings
def user_list(settings: Settings) -> None:
    """List users and their roles.

    Example: randomizer user list --json
    """
    users = settings.backend().list_users()
    emit(
        settings,
        users,
        lambda: table(
            [
                (
                    u.name,
                    u.role,
                    "disabled" if u.disabled else "active",
                    u.created_at,
                    ",".join(u.sites) or "all",
                )
                for u in users
            ],
            ["user", "role", "status", "created", "sites"],
        ),
    )


@user.command("disable")
@click.argument("name")
@reason_option(required=False)
@json_option
@pass_settings
def user_disable(settings: Settings, name: str, reason: str | None) -> None:
    """Disable a user; the account stays in the audit trail.

    Example: randomizer user disable bob --reason "left the study team"
    """
    info = settings.backend().disable_user(name, reason or "")
    emit(settings, info, f"User {info.name} disabled.")


@user.command("passwd")
@click.argument("name", required=False)
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin.")
@json_option
@pass_settings
def user_passwd(settings: Settings, name: str | None, password_stdin: bool) -> None:
    """Change your own password, or (admin) another user's.

    Example: echo "$NEW" | randomizer user passwd --password-stdin
    """
    password = _new_password(password_stdin, name or settings.user or "you")
    info = settings.backend().change_password(name, password)
    emit(settings, info, f"Password of {info.name} changed.")


@user.command("unlock")
@click.argument("name")
@click.option(
    "--client",
    metavar="ADDRESS",
    help="Also lift the lock of this client address (as the server logged it).",
)
@json_option
@pass_settings
def user_unlock(settings: Settings, name: str, client: str | None) -> None:
    """Lift the login lock that failed logins put on a user name.

    Example: randomizer --server https://trial.example.org user unlock ivan --client 10.0.0.7
    """
    result = settings.backend().lift_login_lock(name, client)
    where = f"user name {result.user}" + (f" and address {result.client}" if result.client else "")
    emit(
        settings,
        result,
        f"Login lock of {where} lifted."
        if result.lifted
        else f"No failed logins or lock on {where}: nothing to lift.",
    )


@click.group()
def key() -> None:
    """Manage the trial key (admin).

    Example: randomizer --user alice key rotate --new-key-file /secure/trial-2026.key
    """


@key.command("rotate")
@click.option(
    "--new-key-file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the new key file (must not exist).",
)
@json_option
@pass_settings
def key_rotate(settings: Settings, new_key_file: str) -> None:
    """A new trial key and data key; every sealed value is sealed again under them.

    Afterwards the old key file opens nothing in this database (backups made before
    still need it). Stop the trial server first; on PostgreSQL run it as the owner.

    Example: randomizer key rotate --new-key-file /secure/trial-2026.key
    """
    from pathlib import Path

    path = settings.custody().rotate_key(Path(new_key_file))
    emit(
        settings,
        {"new_key_file": path},
        f"Key rotated: use {path} from now on and destroy "
        "the old key file (backups made before now still need it).",
    )
