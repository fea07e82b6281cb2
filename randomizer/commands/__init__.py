"""The randomizer command line: the root group assembling one command group per module.

The console script ``randomizer`` and ``python -m randomizer`` both run :func:`main`.
"""

from __future__ import annotations

from pathlib import Path

import click

from randomizer import __version__
from randomizer.commands.allocation import kit, pharmacy, randomize
from randomizer.commands.audit import audit_group, verify
from randomizer.commands.base import RandomizerGroup, Settings, root_options
from randomizer.commands.demo import demo
from randomizer.commands.listing import design, list_group
from randomizer.commands.maintenance import backup, db, restore
from randomizer.commands.remote import login, logout, serve
from randomizer.commands.setup import init, key, user
from randomizer.commands.unblinding import lock, report, unblind

__all__ = ["cli", "main"]


@click.group(cls=RandomizerGroup)
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


for command in (
    init,
    user,
    key,
    design,
    list_group,
    randomize,
    kit,
    pharmacy,
    unblind,
    lock,
    report,
    audit_group,
    demo,
    db,
    backup,
    restore,
    serve,
    login,
    logout,
    verify,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli()
