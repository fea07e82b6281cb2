"""Frozen format vectors of key format 2, beside key format 1: both must open and verify.

``tests/data/formats-v2.json`` is the trial of ``formats-v1.json`` after one key
rotation: a new trial key and data key, the v1 trial's MAC keys stored wrapped, and the
v1 sealed values sealed again under the new data key. Its values were computed once and
are never regenerated (nor is ``formats-v1.json``): if a test here fails after a
refactor, the refactor changed a stored format. A database of either key format opens
through :func:`randomizer.context.vault_for`, and the v1 audit chain and checkpoint
verify under either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

from randomizer import audit
from randomizer.context import load_trial, vault_for
from randomizer.design import design_text, parse_design
from randomizer.errors import SealedDataError
from randomizer.models import AuditHead, Trial
from randomizer.store import Store
from randomizer.vault import (
    AUDIT_MAC_INFO,
    KEY_FORMAT_DERIVED,
    KEY_FORMAT_WRAPPED,
    ROW_MAC_INFO,
    KeyMaterial,
    Vault,
    open_keys,
    wrap_keys,
)
from tests.support.assertions import NOT_CURRENT_KEY, OPAQUE
from tests.support.database import vector_rows

DATA = Path(__file__).resolve().parent / "data"


def vectors(name: str) -> dict[str, Any]:
    with (DATA / name).open(encoding="utf-8") as file:
        loaded: dict[str, Any] = json.load(file)
    return loaded


V1 = vectors("formats-v1.json")
V2 = vectors("formats-v2.json")
TRIAL: str = V2["trial"]
KEYS: dict[str, Any] = V2["keys"]
TRIAL_KEY = bytes.fromhex(KEYS["trial_key"])
DATA_KEY = bytes.fromhex(KEYS["data_key"])
AUDIT_KEY = bytes.fromhex(KEYS["audit_mac_key"])
ROW_KEY = bytes.fromhex(KEYS["row_mac_key"])
MATERIAL = KeyMaterial(
    key_format=KEYS["key_format"],
    wrapped_data_key=bytes.fromhex(KEYS["wrapped_data_key"]),
    wrapped_audit_key=bytes.fromhex(KEYS["wrapped_audit_mac_key"]),
    wrapped_row_key=bytes.fromhex(KEYS["wrapped_row_mac_key"]),
)
V1_TRIAL_KEY = bytes.fromhex(V1["keys"]["trial_key"])
V1_DATA_KEY = bytes.fromhex(V1["keys"]["data_key"])
V1_MATERIAL = KeyMaterial(KEY_FORMAT_DERIVED, bytes.fromhex(V1["keys"]["wrapped_data_key"]))

sealed_cases = pytest.mark.parametrize(
    "case", V2["sealed"], ids=[case["name"] for case in V2["sealed"]]
)


def hkdf_sha256(key: bytes, info: bytes) -> bytes:
    """RFC 5869 with an empty salt, 32 bytes, written out with the standard library."""
    pseudorandom_key = hmac.new(bytes(32), key, hashlib.sha256).digest()
    return hmac.new(pseudorandom_key, info + b"\x01", hashlib.sha256).digest()


def test_the_vector_file_is_marked_frozen() -> None:
    assert V2["comment"].startswith("frozen: do not regenerate;")
    assert V2["format"] == "randomizer/v2"
    assert KEYS["key_format"] == KEY_FORMAT_WRAPPED == 2
    assert V2["rotated_from"]["trial_key"] == V1["keys"]["trial_key"]
    assert V2["rotated_from"]["data_key"] == V1["keys"]["data_key"]


# the key material --------------------------------------------------------------------------


def test_wrapping_the_keys_gives_the_stored_bytes() -> None:
    assert wrap_keys(TRIAL_KEY, DATA_KEY, AUDIT_KEY, ROW_KEY) == MATERIAL


def test_each_stored_key_unwraps_on_its_own_with_rfc_5649() -> None:
    # as an independent implementation would read them: three separate AES key wraps
    assert MATERIAL.wrapped_audit_key is not None and MATERIAL.wrapped_row_key is not None
    assert aes_key_unwrap_with_padding(TRIAL_KEY, MATERIAL.wrapped_data_key) == DATA_KEY
    assert aes_key_unwrap_with_padding(TRIAL_KEY, MATERIAL.wrapped_audit_key) == AUDIT_KEY
    assert aes_key_unwrap_with_padding(TRIAL_KEY, MATERIAL.wrapped_row_key) == ROW_KEY


def test_the_mac_keys_are_the_v1_trials_derived_ones() -> None:
    assert KEYS["audit_mac_info"] == AUDIT_MAC_INFO.decode() == V1["keys"]["audit_mac_info"]
    assert KEYS["row_mac_info"] == ROW_MAC_INFO.decode() == "randomizer/v1 row-mac"
    assert AUDIT_KEY.hex() == V1["keys"]["audit_mac_key"]
    assert AUDIT_KEY == hkdf_sha256(V1_DATA_KEY, AUDIT_MAC_INFO)
    assert ROW_KEY == hkdf_sha256(V1_DATA_KEY, ROW_MAC_INFO)
    v1_vault = open_keys(V1_TRIAL_KEY, TRIAL, V1_MATERIAL)
    assert (v1_vault.audit_key(), v1_vault.row_key) == (AUDIT_KEY, ROW_KEY)


def test_the_stored_keys_open_with_the_stored_mac_keys_not_derived_ones() -> None:
    vault = open_keys(TRIAL_KEY, TRIAL, MATERIAL)
    assert (vault.audit_key(), vault.row_key) == (AUDIT_KEY, ROW_KEY)
    derived = Vault(DATA_KEY, TRIAL)
    assert AUDIT_KEY != derived.audit_key() and ROW_KEY != derived.row_key


def test_the_v1_trial_key_opens_nothing_of_v2_and_the_v2_key_nothing_of_v1() -> None:
    for trial_key, material in ((V1_TRIAL_KEY, MATERIAL), (TRIAL_KEY, V1_MATERIAL)):
        with pytest.raises(SealedDataError, match=f"^{re.escape(NOT_CURRENT_KEY)}$"):
            open_keys(trial_key, TRIAL, material)


# sealed values ----------------------------------------------------------------------------


@sealed_cases
def test_sealing_with_the_stored_nonce_gives_the_stored_bytes(case: dict[str, Any]) -> None:
    vault = open_keys(TRIAL_KEY, TRIAL, MATERIAL)
    sealed = vault.seal(
        case["kind"], case["row"], case["value"], nonce=bytes.fromhex(case["nonce"])
    )
    assert sealed.hex() == case["sealed"]


@sealed_cases
def test_each_data_key_opens_its_own_sealed_values_only(case: dict[str, Any]) -> None:
    kind, row = case["kind"], case["row"]
    v1_vault = open_keys(V1_TRIAL_KEY, TRIAL, V1_MATERIAL)
    v2_vault = open_keys(TRIAL_KEY, TRIAL, MATERIAL)
    assert v2_vault.open(kind, row, bytes.fromhex(case["sealed"])) == case["value"]
    assert v1_vault.open(kind, row, bytes.fromhex(case["v1_sealed"])) == case["value"]
    for vault, other in ((v1_vault, case["sealed"]), (v2_vault, case["v1_sealed"])):
        with pytest.raises(SealedDataError, match=f"^{re.escape(OPAQUE)}$"):
            vault.open(kind, row, bytes.fromhex(other))


def test_the_v2_sealed_values_are_the_v1_ones_sealed_again() -> None:
    assert [(c["name"], c["kind"], c["row"], c["value"], c["v1_sealed"]) for c in V2["sealed"]] == [
        (c["name"], c["kind"], c["row"], c["value"], c["sealed"]) for c in V1["sealed"]
    ]


# a database of either key format -------------------------------------------------------------


def trial_database(db_url: str, trial_key_format: int) -> Store:
    """A database holding the vectors' trial row, in key format 1 or 2, and the v1 chain."""
    design = parse_design(design_text("exosome-ms"))
    material = MATERIAL if trial_key_format == KEY_FORMAT_WRAPPED else V1_MATERIAL
    events: list[dict[str, Any]] = V1["audit"]["events"]
    store = Store(db_url, create=True)
    with store.transaction() as session:
        store.create_schema(session)
        audit.start_chain(session)
        session.add(
            Trial(
                id=TRIAL,
                design_toml=design_text("exosome-ms"),
                design_digest=design.digest(),
                wrapped_data_key=material.wrapped_data_key,
                created_at=datetime(2026, 11, 30, tzinfo=UTC),
                key_format=material.key_format,
                wrapped_audit_key=material.wrapped_audit_key,
                wrapped_row_key=material.wrapped_row_key,
            )
        )
        session.add_all(vector_rows(events))
        session.flush()
        head = session.get(AuditHead, 1)
        assert head is not None
        head.seq, head.mac = events[-1]["seq"], events[-1]["mac"]
    return store


@pytest.mark.parametrize("key_format", [KEY_FORMAT_DERIVED, KEY_FORMAT_WRAPPED])
def test_a_database_of_either_key_format_opens_and_verifies(db_url: str, key_format: int) -> None:
    trial_key = TRIAL_KEY if key_format == KEY_FORMAT_WRAPPED else V1_TRIAL_KEY
    other_key = V1_TRIAL_KEY if key_format == KEY_FORMAT_WRAPPED else TRIAL_KEY
    cases = V2["sealed"] if key_format == KEY_FORMAT_WRAPPED else V1["sealed"]
    checkpoint = audit.read_checkpoint(
        V1["checkpoint"]["note"], V1["checkpoint"]["public_key_pem"].encode()
    )
    store = trial_database(db_url, key_format)
    try:
        with store.transaction() as session:
            trial = load_trial(session)
            assert trial.key_format == key_format
            vault = vault_for(trial, trial_key)
            assert (vault.audit_key(), vault.row_key) == (AUDIT_KEY, ROW_KEY)
            report = audit.verify(session, vault.audit_key(), checkpoint)
            assert report.head_mac == V1["audit"]["events"][-1]["mac"]
            assert report.checkpoint_seq == V1["checkpoint"]["sequence"]
            for case in cases:
                opened = vault.open(case["kind"], case["row"], bytes.fromhex(case["sealed"]))
                assert opened == case["value"]
            with pytest.raises(SealedDataError, match=f"^{re.escape(NOT_CURRENT_KEY)}$"):
                vault_for(trial, other_key)
    finally:
        store.dispose()
