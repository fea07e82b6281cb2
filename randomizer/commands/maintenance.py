"""Commands that look after the database: db status|upgrade, backup, restore."""

from __future__ import annotations

from pathlib import Path

import click

from randomizer.commands.base import Settings, emit, json_option, pass_settings


@click.group()
def db() -> None:
    """Schema status and upgrades.

    Example: randomizer db status
    """


@db.command("status")
@json_option
@pass_settings
def db_status(settings: Settings) -> None:
    """Show the database's schema revision against this release's.

    Example: randomizer db status
    """
    status = settings.custody().db_status()
    advice = {
        "current": "up to date",
        "behind": "run 'randomizer db upgrade'",
        "ahead": "use the newer randomizer release",
        "empty": "run 'randomizer init'",
        "unversioned": "restore a backup (see docs/operations.md)",
    }[status.state]
    emit(
        settings,
        status,
        f"schema {status.current or '(none)'}; this release expects "
        f"{status.head}: {status.state}, {advice}",
    )


@db.command("upgrade")
@json_option
@pass_settings
def db_upgrade(settings: Settings) -> None:
    """Migrate the schema to this release in one transaction (admin; back up first).

    Example: randomizer backup --out before-upgrade.db && randomizer db upgrade
    """
    result = settings.custody().db_upgrade()
    emit(settings, result, f"schema {result.before or '(none)'} -> {result.after}")


@click.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Backup file to create (must not exist; mode 0600).",
)
@json_option
@pass_settings
def backup(settings: Settings, out: Path) -> None:
    """Take a consistent online backup of a SQLite trial database and verify it (admin).

    The copy holds sealed data only; keep it apart from the key file.
    Example: randomizer backup --out /backups/trial-2026-11-25.db
    """
    result = settings.custody().backup(out)
    emit(
        settings,
        result,
        f"Backup written to {result.file} and verified "
        f"({result.audit_events} audit events).\nSHA-256: {result.sha256}",
    )


@click.command()
@click.option(
    "--from",
    "backup_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Backup file to restore.",
)
@json_option
@pass_settings
def restore(settings: Settings, backup_file: Path) -> None:
    """Restore a backup as the database given by --db (which must not exist yet) (admin).

    The restored copy must pass audit and list verification with the key file.
    Example: randomizer --db sqlite:///restored.db restore --from /backups/trial.db
    """
    result = settings.custody().restore(backup_file)
    emit(
        settings,
        result,
        f"Restored {backup_file} into {result.file}: audit trail "
        f"({result.audit_events} events) and allocation list verified.",
    )
