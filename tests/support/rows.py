"""Row MACs seen from the tests: re-MAC a row with the key, and the refusal a broken row gives."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from randomizer import rows
from randomizer.store import Store
from tests.support.trial import TrialFiles, open_trial_vault


def reseal(files: TrialFiles, table: str, row_id: Any) -> None:
    """Give one row the MAC of its current values, with the key, as a key holder could.

    For tests of what lies behind the row MAC (a damaged value a release might have
    written): the row passes its own check, though not ``randomizer verify``'s
    comparison with the trail.
    """
    vault = open_trial_vault(files)
    spec = rows.BY_TABLE[table]
    model: Any = spec.model
    columns = [getattr(model, name) for name in spec.columns]
    store = Store(files.db_url)
    try:
        with store.transaction() as session:
            values = session.execute(select(*columns).where(columns[0] == row_id)).one()
            mac = rows.mac_row(vault, table, values)
            session.execute(update(model).where(columns[0] == row_id).values(row_mac=mac))
    finally:
        store.dispose()


def reseal_all(files: TrialFiles) -> None:
    """Give every covered row the MAC of its current values, with the key.

    For tests of the sealing beneath the row MACs: what a key holder could do.
    """
    vault = open_trial_vault(files)
    store = Store(files.db_url)
    try:
        with store.transaction() as session:
            for spec in rows.COVERED:
                model: Any = spec.model
                columns = [getattr(model, name) for name in spec.columns]
                for values in session.execute(select(*columns)).all():
                    mac = rows.mac_row(vault, spec.table, values)
                    session.execute(
                        update(model).where(columns[0] == values[0]).values(row_mac=mac)
                    )
    finally:
        store.dispose()


def integrity_refusal(table: str, row_id: Any) -> str:
    """The CLI's ``Error:`` text when ``table``'s row ``row_id`` fails its MAC."""
    return (
        f"integrity check failed: {table} row {row_id} was changed without the key (its MAC "
        "does not match); nothing was done, an admin or monitor verifies the database "
        "(run 'randomizer verify')"
    )
