"""The randomizer command line: the root group assembling one command group per module.

The console script ``randomizer`` and ``python -m randomizer`` both run :func:`main`.

The root group imports no command module until a command runs: :data:`COMMANDS` names
each top-level command's module and attribute and its one-line help, so that
``randomizer --help`` and ``--version`` start in about the time of Python and click,
and a command loads only what it needs (tests/test_startup.py checks that ``--help``
imports neither SQLAlchemy, alembic nor numpy). To add a top-level command, define it
in its module under ``randomizer/commands/`` as before and add ONE line to
:data:`COMMANDS`: ``"name": LazyCommand("randomizer.commands.module:attribute", "its
short help")``, the short help being the first sentence of its docstring (the test
prints the right text if it differs). Never import a command module here.
"""

from __future__ import annotations

from pathlib import Path

import click

from randomizer import __version__
from randomizer.commands.base import LazyCommand, RandomizerGroup, Settings, root_options

__all__ = ["COMMANDS", "cli", "main"]

COMMANDS: dict[str, LazyCommand] = {
    "init": LazyCommand(
        "randomizer.commands.setup:init",
        "Create the trial database, its key file (mode 0600) and the first admin.",
    ),
    "user": LazyCommand("randomizer.commands.setup:user", "Manage users and roles (admin)."),
    "key": LazyCommand("randomizer.commands.setup:key", "Manage the trial key (admin)."),
    "design": LazyCommand(
        "randomizer.commands.listing:design", "Show or check trial designs (no database needed)."
    ),
    "list": LazyCommand(
        "randomizer.commands.listing:list_group",
        "Preview, generate, approve and verify the allocation list.",
    ),
    "randomize": LazyCommand(
        "randomizer.commands.allocation:randomize",
        "Check eligibility and randomize a participant; prints the visit-1 kit code.",
    ),
    "kit": LazyCommand(
        "randomizer.commands.allocation:kit", "Request and replace kits (investigator)."
    ),
    "pharmacy": LazyCommand(
        "randomizer.commands.allocation:pharmacy",
        "Kit contents and preparation (pharmacist, unblinded).",
    ),
    "unblind": LazyCommand(
        "randomizer.commands.unblinding:unblind",
        "Emergency unblinding of one participant; full unblinding after lock; dummy export.",
    ),
    "lock": LazyCommand(
        "randomizer.commands.unblinding:lock",
        "Lock the database: no more randomization or dispensing (admin).",
    ),
    "report": LazyCommand(
        "randomizer.commands.unblinding:report",
        "Recruitment and kit status; balance by arm only for admins (and statisticians "
        "after lock).",
    ),
    "audit": LazyCommand(
        "randomizer.commands.audit:audit_group", "Read, verify and anchor the audit trail."
    ),
    "demo": LazyCommand(
        "randomizer.commands.demo:demo",
        "Play the exosome-ms trial end to end: 20 participants, 80 infusions, lock, unblinding.",
    ),
    "db": LazyCommand("randomizer.commands.maintenance:db", "Schema status and upgrades."),
    "backup": LazyCommand(
        "randomizer.commands.maintenance:backup",
        "Take a consistent online backup of a SQLite trial database and verify it (admin).",
    ),
    "restore": LazyCommand(
        "randomizer.commands.maintenance:restore",
        "Restore a backup as the database given by --db (which must not exist yet) (admin).",
    ),
    "serve": LazyCommand(
        "randomizer.commands.remote:serve",
        "Run the trial server: it alone opens the key file and the database.",
    ),
    "login": LazyCommand(
        "randomizer.commands.remote:login",
        "Log in to the trial server and keep the token in a file only you can read.",
    ),
    "logout": LazyCommand(
        "randomizer.commands.remote:logout",
        "End the login to the trial server and delete the token file.",
    ),
    "mail": LazyCommand(
        "randomizer.commands.mail:mail",
        "Notification e-mails of emergency unblindings (the outbox).",
    ),
    "verify": LazyCommand(
        "randomizer.commands.audit:verify",
        "Check the whole database: row MACs, audit chain, recorded rows, list (admin, monitor).",
    ),
    "participant": LazyCommand(
        "randomizer.commands.participants:participant",
        "Randomized participants: who, visits done, the next visit's window; void a "
        "randomization made in error (admin).",
    ),
}
"""Every top-level command: its name, where it is ("module:attribute") and its short help."""


@click.group(cls=RandomizerGroup, lazy_commands=COMMANDS)
@root_options
@click.version_option(__version__, prog_name="randomizer")
@click.pass_context
def cli(
    ctx: click.Context, db: str, key_file: Path, user: str | None, as_json: bool, server: str | None
) -> None:
    """randomizer: blinded randomization and allocation for clinical trials.

    Example: randomizer --user alice design show exosome-ms
    """
    ctx.obj = Settings(db=db, key_file=key_file, user=user, as_json=as_json, server=server)


def main() -> None:
    """Console-script entry point."""
    cli()
