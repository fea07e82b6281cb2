"""Frozen format vectors: the bytes a v1 trial database holds must open and verify for years.

``tests/data/formats-v1.json`` fixes, for given keys and nonces, the wrapped data
key, the audit MAC key, a sealed value of every kind, an audit chain, a list
commitment and a signed checkpoint note. Its values were computed once and are
never regenerated: if a test here fails after a refactor, the refactor changed a
stored format and would strand existing trials. A new format version adds a new
vector file beside this one, and the code keeps reading both.
"""

from __future__ import annotations

import ast
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from randomizer import audit
from randomizer.allocation.stream import parse_seed
from randomizer.errors import AuditError, SealedDataError
from randomizer.models import AuditHead
from randomizer.sealed import SEALED_WIDTHS, SEED_KIND, SLOT_KIND, open_allocation, slot_row
from randomizer.store import Store
from randomizer.trial import list_commitment
from randomizer.vault import (
    AUDIT_MAC_INFO,
    NONCE_SIZE,
    Vault,
    sealed_size,
    unwrap_data_key,
    wrap_data_key,
)
from tests.support.assertions import NOT_CURRENT_KEY, OPAQUE
from tests.support.database import event_body, vector_rows

DATA = Path(__file__).resolve().parent / "data"
PACKAGE = Path(__file__).resolve().parent.parent / "randomizer"


def load_format_vectors(name: str) -> dict[str, Any]:
    """The frozen format vector file ``tests/data/<name>``."""
    with (DATA / name).open(encoding="utf-8") as file:
        vectors: dict[str, Any] = json.load(file)
    return vectors


V1 = load_format_vectors("formats-v1.json")
TRIAL: str = V1["trial"]
TRIAL_KEY = bytes.fromhex(V1["keys"]["trial_key"])
DATA_KEY = bytes.fromhex(V1["keys"]["data_key"])
WRAPPED_DATA_KEY = bytes.fromhex(V1["keys"]["wrapped_data_key"])
AUDIT_MAC_KEY = bytes.fromhex(V1["keys"]["audit_mac_key"])
EVENTS: list[dict[str, Any]] = V1["audit"]["events"]
CHECKPOINT: dict[str, Any] = V1["checkpoint"]

sealed_cases = pytest.mark.parametrize(
    "case", V1["sealed"], ids=[case["name"] for case in V1["sealed"]]
)
event_cases = pytest.mark.parametrize(
    "event", EVENTS, ids=[f"{e['seq']}-{e['action']}" for e in EVENTS]
)


def v1_vault(trial: str = TRIAL) -> Vault:
    return Vault(DATA_KEY, trial)


def assert_opaque_failure(vault: Vault, kind: str, row: str, sealed: bytes) -> None:
    with pytest.raises(SealedDataError) as caught:
        vault.open(kind, row, sealed)
    assert str(caught.value) == OPAQUE


def flipped(data: bytes, position: int) -> bytes:
    altered = bytearray(data)
    altered[position] ^= 0x01
    return bytes(altered)


def test_the_vector_file_is_marked_frozen() -> None:
    assert V1["comment"].startswith("frozen: do not regenerate;")
    assert V1["format"] == "randomizer/v1"


# The wrapped data key and the audit MAC key ---------------------------------------------


def test_wrapping_the_data_key_gives_the_stored_bytes() -> None:
    assert wrap_data_key(TRIAL_KEY, DATA_KEY) == WRAPPED_DATA_KEY


def test_the_stored_wrapped_key_unwraps_to_the_data_key() -> None:
    assert unwrap_data_key(TRIAL_KEY, WRAPPED_DATA_KEY) == DATA_KEY


def test_the_stored_wrapped_key_refuses_a_wrong_trial_key_and_every_flipped_byte() -> None:
    with pytest.raises(SealedDataError, match=f"^{re.escape(NOT_CURRENT_KEY)}$"):
        unwrap_data_key(flipped(TRIAL_KEY, 0), WRAPPED_DATA_KEY)
    for position in range(len(WRAPPED_DATA_KEY)):
        with pytest.raises(SealedDataError, match=f"^{re.escape(NOT_CURRENT_KEY)}$"):
            unwrap_data_key(TRIAL_KEY, flipped(WRAPPED_DATA_KEY, position))


def test_the_audit_mac_key_is_the_stored_hkdf_of_the_data_key() -> None:
    assert AUDIT_MAC_INFO.decode("utf-8") == V1["keys"]["audit_mac_info"]
    assert v1_vault().audit_key() == AUDIT_MAC_KEY


# Sealed values --------------------------------------------------------------------------


@sealed_cases
def test_sealing_with_the_stored_nonce_gives_the_stored_bytes(case: dict[str, Any]) -> None:
    sealed = v1_vault().seal(
        case["kind"], case["row"], case["value"], nonce=bytes.fromhex(case["nonce"])
    )
    assert sealed.hex() == case["sealed"]


@sealed_cases
def test_the_stored_bytes_open_to_the_stored_value(case: dict[str, Any]) -> None:
    sealed = bytes.fromhex(case["sealed"])
    assert len(sealed) == sealed_size(case["kind"])
    assert v1_vault().open(case["kind"], case["row"], sealed) == case["value"]


@sealed_cases
def test_the_stored_bytes_follow_the_documented_layout(case: dict[str, Any]) -> None:
    # Read without the Vault, as an independent implementation would: nonce || AES-256-GCM
    # ciphertext and tag, under the stated associated data, over length byte + value + zeros.
    sealed = bytes.fromhex(case["sealed"])
    associated_data = bytes.fromhex(case["associated_data"])
    assert associated_data == b"\0".join(
        [b"randomizer/v1", TRIAL.encode(), case["kind"].encode(), case["row"].encode()]
    )
    assert sealed[:NONCE_SIZE].hex() == case["nonce"]
    plaintext = AESGCM(DATA_KEY).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], associated_data)
    assert plaintext.hex() == case["plaintext"]
    value = case["value"].encode("utf-8")
    assert plaintext == bytes([len(value)]) + value + bytes(
        SEALED_WIDTHS[case["kind"]] - len(value)
    )


@sealed_cases
def test_a_flipped_byte_of_the_stored_bytes_fails_opaquely(case: dict[str, Any]) -> None:
    sealed = bytes.fromhex(case["sealed"])
    for position in range(len(sealed)):
        assert_opaque_failure(v1_vault(), case["kind"], case["row"], flipped(sealed, position))


@sealed_cases
def test_the_stored_bytes_fail_opaquely_under_other_associated_data_or_key(
    case: dict[str, Any],
) -> None:
    kind, row, sealed = case["kind"], case["row"], bytes.fromhex(case["sealed"])
    assert_opaque_failure(v1_vault(), kind, row + "0", sealed)
    assert_opaque_failure(v1_vault(TRIAL + "2"), kind, row, sealed)
    for other_kind in sorted(set(SEALED_WIDTHS) - {kind}):
        # slot.allocation and trial.seed share a width: that swap fails on the tag itself
        assert_opaque_failure(v1_vault(), other_kind, row, sealed)
    assert_opaque_failure(Vault(flipped(DATA_KEY, 31), TRIAL), kind, row, sealed)


@pytest.mark.parametrize(
    "case", [c for c in V1["sealed"] if c["kind"] == SLOT_KIND], ids=lambda case: case["name"]
)
def test_a_stored_slot_opens_to_its_arm_block_and_block_size(case: dict[str, Any]) -> None:
    stratum, _, sequence = case["row"].rpartition("#")
    assert slot_row(stratum, int(sequence)) == case["row"]
    arm, block, block_size = case["value"].split(";")
    assert open_allocation(v1_vault(), stratum, int(sequence), bytes.fromhex(case["sealed"])) == (
        arm,
        int(block),
        int(block_size),
    )


def test_the_stored_sealed_seed_opens_and_recomputes_the_list_commitment() -> None:
    (case,) = [c for c in V1["sealed"] if c["kind"] == SEED_KIND]
    assert case["row"] == TRIAL
    seed = parse_seed(v1_vault().open(SEED_KIND, TRIAL, bytes.fromhex(case["sealed"])))
    vector = V1["list_commitment"]
    assert seed.hex() == vector["seed"]
    assert list_commitment(seed, vector["list_digest"]) == vector["commitment"]


def test_the_list_commitment_recomputes_and_binds_seed_and_digest() -> None:
    vector = V1["list_commitment"]
    seed = bytes.fromhex(vector["seed"])
    assert list_commitment(seed, vector["list_digest"]) == vector["commitment"]
    assert list_commitment(flipped(seed, 0), vector["list_digest"]) != vector["commitment"]
    other_digest = flipped(bytes.fromhex(vector["list_digest"]), 0).hex()
    assert list_commitment(seed, other_digest) != vector["commitment"]


def test_a_nonce_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="a nonce has 12 bytes, not 16"):
        v1_vault().seal("kit.content", "kit", "saline", nonce=bytes(16))


def test_no_library_code_fixes_a_nonce() -> None:
    # Two values sealed under one key and nonce break AES-GCM: the nonce argument is for
    # these vectors, and every seal in the library must draw a fresh one.
    callers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and any(k.arg == "nonce" for k in node.keywords):
                callers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert callers == []


# The audit chain ------------------------------------------------------------------------


@event_cases
def test_the_canonical_form_of_a_stored_event_is_the_stored_text(event: dict[str, Any]) -> None:
    assert event_body(event) == event["canonical"].encode("utf-8")


@event_cases
def test_the_mac_of_a_stored_event_recomputes(event: dict[str, Any]) -> None:
    assert audit.event_mac(AUDIT_MAC_KEY, event["prev_mac"], event_body(event)) == event["mac"]


def test_the_stored_events_form_one_chain_from_the_genesis_mac() -> None:
    assert V1["audit"]["genesis_mac"] == audit.GENESIS_MAC
    assert [e["seq"] for e in EVENTS] == list(range(1, len(EVENTS) + 1))
    assert [e["prev_mac"] for e in EVENTS] == [audit.GENESIS_MAC] + [e["mac"] for e in EVENTS[:-1]]


def new_trail(db_url: str) -> Store:
    """A migrated, empty database holding only the audit head row."""
    store = Store(db_url, create=True)
    with store.transaction() as session:
        store.create_schema(session)
        audit.start_chain(session)
    return store


def stored_checkpoint() -> audit.Checkpoint:
    return audit.read_checkpoint(CHECKPOINT["note"], CHECKPOINT["public_key_pem"].encode())


def test_appending_the_stored_events_reproduces_their_macs_and_verifies(db_url: str) -> None:
    # keyed as the trial keys it: the audit key derived from the unwrapped data key
    key = v1_vault().audit_key()
    store = new_trail(db_url)
    try:
        with store.transaction() as session:
            appended = [
                audit.append(
                    session,
                    key,
                    now=datetime.fromisoformat(e["at"]),
                    user=e["user"],
                    role=e["role"],
                    action=e["action"],
                    subject=e["subject"],
                    reason=e["reason"],
                    details=e["details"],
                )
                for e in EVENTS
            ]
        assert [(e.seq, e.at, e.mac) for e in appended] == [
            (e["seq"], e["at"], e["mac"]) for e in EVENTS
        ]
        with store.transaction() as session:
            report = audit.verify(session, key, stored_checkpoint())
    finally:
        store.dispose()
    assert report == audit.ChainReport(
        events=len(EVENTS),
        head_seq=len(EVENTS),
        head_mac=EVENTS[-1]["mac"],
        checkpoint_seq=len(EVENTS),
    )


def test_verify_accepts_the_stored_rows_as_a_database_holds_them(db_url: str) -> None:
    store = new_trail(db_url)
    try:
        with store.transaction() as session:
            session.add_all(vector_rows(EVENTS))
            head = session.get(AuditHead, 1)
            assert head is not None
            head.seq, head.mac = EVENTS[-1]["seq"], EVENTS[-1]["mac"]
        with store.transaction() as session:
            report = audit.verify(session, v1_vault().audit_key(), stored_checkpoint())
            assert report.head_mac == EVENTS[-1]["mac"]
            assert report.checkpoint_seq == len(EVENTS)
            # the chain is keyed by the derived audit key, not by the data key itself
            with pytest.raises(AuditError, match="^audit trail broken at event 1: it was altered"):
                audit.verify(session, DATA_KEY)
    finally:
        store.dispose()


# The signed checkpoint note -------------------------------------------------------------


def test_signing_the_stored_checkpoint_gives_the_stored_note() -> None:
    # Ed25519 signatures are deterministic, so the whole note is fixed.
    checkpoint = audit.Checkpoint(
        trial=CHECKPOINT["trial"],
        seq=CHECKPOINT["sequence"],
        head_mac=CHECKPOINT["head"],
        at=CHECKPOINT["time"],
    )
    assert (
        audit.sign_checkpoint(checkpoint, CHECKPOINT["private_key_pem"].encode())
        == CHECKPOINT["note"]
    )


def test_the_stored_note_verifies_with_the_stored_public_key_and_names_the_head() -> None:
    assert stored_checkpoint() == audit.Checkpoint(
        trial=TRIAL, seq=CHECKPOINT["sequence"], head_mac=CHECKPOINT["head"], at=CHECKPOINT["time"]
    )
    assert (CHECKPOINT["sequence"], CHECKPOINT["head"]) == (EVENTS[-1]["seq"], EVENTS[-1]["mac"])


def test_an_altered_stored_note_is_refused() -> None:
    altered = CHECKPOINT["note"].replace(
        f"sequence: {CHECKPOINT['sequence']}\n", f"sequence: {CHECKPOINT['sequence'] - 1}\n"
    )
    assert altered != CHECKPOINT["note"]
    with pytest.raises(AuditError, match="^the checkpoint note's signature does not verify"):
        audit.read_checkpoint(altered, CHECKPOINT["public_key_pem"].encode())
