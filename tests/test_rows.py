"""The row MAC itself: its key, its encoding, the bulk paths agreeing with the general one."""

from __future__ import annotations

import hmac
import os
import re
from datetime import UTC, date, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Integer,
    LargeBinary,
    String,
    create_engine,
    insert,
    select,
)

from randomizer import rows
from randomizer.access import Role
from randomizer.errors import IntegrityFailure
from randomizer.models import Base, UTCDateTime
from randomizer.vault import AUDIT_MAC_INFO, ROW_MAC_INFO, Vault

DATA_KEY = bytes(range(32))


def test_the_row_key_is_its_own_hkdf_label_of_the_data_key() -> None:
    vault = Vault(DATA_KEY, "t")
    expected = HKDF(hashes.SHA256(), 32, None, ROW_MAC_INFO).derive(DATA_KEY)
    assert ROW_MAC_INFO == b"randomizer/v1 row-mac" != AUDIT_MAC_INFO
    assert vault.row_key == expected != vault.audit_key()
    mac = vault.row_mac(b"data")
    assert mac == hmac.digest(expected, b"data", "sha256")
    assert vault.verify_row_mac(b"data", mac)
    assert not vault.verify_row_mac(b"datA", mac)
    assert not vault.verify_row_mac(b"data", mac[:-1] + bytes([mac[-1] ^ 1]))


def test_the_encoding_is_versioned_typed_and_length_prefixed() -> None:
    values = (
        7,
        "naïve",
        True,
        False,
        None,
        b"\x00\x01",
        datetime(2026, 11, 30, 12, 0, 0, 5, tzinfo=UTC),
        date(2026, 1, 2),
        {"b": "2", "a": "1"},
    )
    assert rows.encode("EXO", "users", values) == (
        b"randomizer/v1 row\x00s3:EXOs5:users"
        b"i1:7s6:na\xc3\xafvetfnb2:\x00\x01"
        b'T32:2026-11-30T12:00:00.000005+00:00D10:2026-01-02j17:{"a":"1","b":"2"}'
    )
    # a str enum (a role as the code sets it) encodes as its text
    assert rows.encode("EXO", "users", (Role.ADMIN,)) == rows.encode("EXO", "users", ("admin",))
    # moving bytes between neighbouring values changes the encoding
    assert rows.encode("t", "u", ("ab", "c")) != rows.encode("t", "u", ("a", "bc"))


def test_a_mac_binds_the_trial_the_table_and_the_row() -> None:
    vault = Vault(DATA_KEY, "t")
    mac = rows.mac_row(vault, "users", (1, "ivan", "investigator", "h", False))
    assert mac != rows.mac_row(vault, "users", (2, "ivan", "investigator", "h", False))
    assert mac != rows.mac_row(vault, "kits", (1, "ivan", "investigator", "h", False))
    assert mac != rows.mac_row(
        Vault(DATA_KEY, "u"), "users", (1, "ivan", "investigator", "h", False)
    )
    assert mac != rows.mac_row(
        Vault(os.urandom(32), "t"), "users", (1, "ivan", "investigator", "h", False)
    )


def test_the_bulk_paths_give_the_general_macs() -> None:
    vault = Vault(DATA_KEY, "t")
    slots = [(k, 3, k * 7, os.urandom(93)) for k in (1, 9, 10, 12345)]
    # the sealed allocation is given but not covered
    general = rows.mac_rows(vault, "slots", [slot[:3] for slot in slots])
    assert rows.mac_new_slots(vault, slots) == general
    empty = (None,) * (len(rows.BY_TABLE["kits"].columns) - 6)
    for spare in (False, True):
        kits = [
            (1, "ABCD-EFGH", os.urandom(61), 5, 1),
            (99, "WXYZ-2345", os.urandom(61), None, None),
        ]
        assert rows.mac_new_kits(vault, kits, spare) == rows.mac_rows(
            vault,
            "kits",
            [(i, c, s, v, spare, "available", *empty) for i, c, _content, s, v in kits],
        )


def _sample(kind: Any) -> Any:
    """A value of a column type, with what trips encoders: non-ASCII text, a time whose
    microseconds are 0, JSON whose stored text is not the canonical one."""
    if isinstance(kind, UTCDateTime):
        return datetime(2026, 11, 30, 12, 0, 0, 0, tzinfo=UTC)
    for sql_type, value in (
        (Boolean, True),
        (Integer, 12345),
        (String, "naïve, ☃"),
        (LargeBinary, b"\x00\x01"),
        (Date, date(2026, 1, 2)),
        (JSON, {"b": "2", "a": "ünï"}),
    ):
        if isinstance(kind, sql_type):
            return value
    raise AssertionError(f"no sample for {kind!r}")


@pytest.mark.parametrize("empty", [False, True], ids=["values", "nulls"])
@pytest.mark.parametrize("spec", rows.COVERED, ids=lambda spec: spec.table)
def test_driver_rows_are_checked_as_their_read_values(spec: rows.Covered, empty: bool) -> None:
    """The bulk check encodes SQLite's stored forms (text times, dates and JSON, 0 and 1)
    exactly as the general path encodes the values SQLAlchemy reads: the MAC written
    through SQLAlchemy passes, a changed value fails."""
    vault = Vault(DATA_KEY, "t")
    engine = create_engine("sqlite://")
    try:
        Base.metadata.create_all(engine)
        table: Any = spec.model.__table__
        values = {
            column.name: None if empty and column.nullable else _sample(column.type)
            for column in table.columns
        }
        covered = [values[name] for name in spec.columns]
        values["row_mac"] = rows.mac_row(vault, spec.table, covered)
        with engine.begin() as connection:
            connection.execute(insert(table), [values])
            check = rows.DriverCheck(vault, spec.table, connection.dialect)
            [batch] = rows.driver_batches(connection, select(*check.columns), "unused")
            [row] = batch
            assert (
                check.encode(row)
                == rows.encode("t", spec.table, covered)[len(rows.prefix("t", spec.table)) :]
            )
            assert check.matches(row)
            check.check_batch([row])
            changed = list(row)
            changed[1] = 99 if isinstance(changed[1], int) else f"{changed[1]}x"
            assert not check.matches(changed)
            with pytest.raises(IntegrityFailure, match=re.escape(f"{spec.table} row {row[0]} was")):
                check.check_batch([row, changed])
    finally:
        engine.dispose()


def test_psycopg_driver_forms_encode_as_their_read_values() -> None:
    """PostgreSQL's driver gives naive UTC datetimes, dates, booleans and JSON values."""
    vault = Vault(DATA_KEY, "t")
    dialect = create_engine("postgresql+psycopg://").dialect  # never connects
    check = rows.DriverCheck(vault, "kits", dialect)
    read = [7, "K1", 3, 1, True, "dispensed", 9]
    read += [datetime(2026, 11, 30, 12, 0, 0, 0, tzinfo=UTC), date(2026, 1, 2)]
    read += [datetime(2026, 11, 30, 12, 0, 1, 5, tzinfo=UTC), "petra", None, "naïve"]
    driver = [v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in read]
    assert check.encode(driver) == rows.encode("t", "kits", read)[len(rows.prefix("t", "kits")) :]
    assert check.matches([*driver, rows.mac_row(vault, "kits", read)])
    participants = rows.DriverCheck(vault, "participants", dialect)
    answers = {"z": "1", "a": "ß"}
    typed = [1, "P-1", "WAW", 1, 1, "R-001", date(2026, 1, 2)]
    typed += [datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "ivan", answers]
    typed += [None] * (len(rows.BY_TABLE["participants"].columns) - len(typed))
    driver = [v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in typed]
    assert participants.matches([*driver, rows.mac_row(vault, "participants", typed)])
