"""The row MAC itself: its key, its encoding, the bulk paths agreeing with the general one."""

from __future__ import annotations

import hmac
import os
from datetime import UTC, date, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from randomizer import rows
from randomizer.access import Role
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
