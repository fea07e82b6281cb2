"""The vault: key files, data key wrapping, sealing and the audit MAC key."""

from __future__ import annotations

import base64
import hashlib
import hmac as stdlib_hmac
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)
from hypothesis import given
from hypothesis import strategies as st

from randomizer.errors import Hint, InvalidInput, KeyFileError, SealedDataError
from randomizer.sealed import SEALED_WIDTHS
from randomizer.vault import (
    NONCE_SIZE,
    Vault,
    create_key_file,
    new_data_key,
    read_key_file,
    sealed_size,
    unwrap_data_key,
    wrap_data_key,
)
from tests.support.assertions import NOT_CURRENT_KEY, OPAQUE

DATA_KEY = bytes(range(32))
TRIAL = "exosome-ms"


@pytest.fixture
def vault() -> Vault:
    return Vault(DATA_KEY, TRIAL)


def assert_opaque_failure(vault: Vault, kind: str, row: str, sealed: bytes) -> None:
    """Both openers refuse it alike (open_many with a good value before the bad one)."""
    with pytest.raises(SealedDataError) as caught:
        vault.open(kind, row, sealed)
    assert str(caught.value) == OPAQUE
    good = vault.seal(kind, "good row", "x")
    with pytest.raises(SealedDataError) as caught:
        vault.open_many(kind, ["good row", row], [good, sealed])
    assert str(caught.value) == OPAQUE


# Known-answer vectors pinning the primitives

# RFC 5649 section 6: the two examples, both under a 192-bit KEK.
RFC5649_KEK = bytes.fromhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
RFC5649_EXAMPLES = [
    (
        "c37b7e6492584340bed12207808941155068f738",
        "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
    ),
    ("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
]


@pytest.mark.parametrize(("key", "wrapped"), RFC5649_EXAMPLES)
def test_aes_key_wrap_with_padding_matches_rfc_5649(key: str, wrapped: str) -> None:
    assert aes_key_wrap_with_padding(RFC5649_KEK, bytes.fromhex(key)).hex() == wrapped
    assert aes_key_unwrap_with_padding(RFC5649_KEK, bytes.fromhex(wrapped)).hex() == key


def test_wrap_data_key_is_rfc_5649_key_wrap_with_padding() -> None:
    trial_key = bytes(range(100, 132))
    wrapped = wrap_data_key(trial_key, DATA_KEY)
    # key wrap is deterministic: the same primitive gives the same bytes
    assert wrapped == aes_key_wrap_with_padding(trial_key, DATA_KEY)
    assert len(wrapped) == 40
    assert unwrap_data_key(trial_key, wrapped) == DATA_KEY


def test_aes_gcm_matches_the_gcm_specification_test_case_16() -> None:
    # McGrew and Viega, "The Galois/Counter Mode of Operation", test case 16
    # (AES-256, 96-bit IV, with associated data), also in NIST's GCM test vectors.
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
    nonce = bytes.fromhex("cafebabefacedbaddecaf888")
    plaintext = bytes.fromhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    )
    associated_data = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    expected = bytes.fromhex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        "76fc6ece0f4e1768cddf8853bb2d551b"
    )
    assert AESGCM(key).encrypt(nonce, plaintext, associated_data) == expected


def test_sealed_layout_follows_the_design(vault: Vault) -> None:
    # An independent reading of the documented format: nonce || AES-256-GCM(ciphertext, tag),
    # associated data naming trial, kind and row, plaintext length byte + value + zeros.
    sealed = vault.seal("kit.content", "slot:17", "exosome")
    associated_data = b"randomizer/v1\0exosome-ms\0kit.content\0slot:17"
    plaintext = AESGCM(DATA_KEY).decrypt(sealed[:12], sealed[12:], associated_data)
    assert plaintext == b"\x07exosome" + bytes(32 - 7)


# Sealing


sealed_kinds = st.sampled_from(sorted(SEALED_WIDTHS))


@given(kind=sealed_kinds, row=st.text(), value=st.text(max_size=64))
def test_seal_and_open_round_trip(kind: str, row: str, value: str) -> None:
    vault = Vault(DATA_KEY, TRIAL)
    if len(value.encode("utf-8")) > SEALED_WIDTHS[kind]:
        with pytest.raises(InvalidInput):
            vault.seal(kind, row, value)
        return
    sealed = vault.seal(kind, row, value)
    assert len(sealed) == sealed_size(kind)
    assert vault.open(kind, row, sealed) == value


@given(kind=sealed_kinds, pairs=st.lists(st.tuples(st.text(), st.text(max_size=8)), max_size=20))
def test_bulk_sealing_and_opening_agree_with_one_at_a_time(
    kind: str, pairs: list[tuple[str, str]]
) -> None:
    vault = Vault(DATA_KEY, TRIAL)
    rows = [row for row, _ in pairs]
    values = [value for _, value in pairs]
    sealed = vault.seal_many(kind, rows, values)
    assert [vault.open(kind, row, s) for row, s in zip(rows, sealed, strict=True)] == values
    assert vault.open_many(kind, rows, [vault.seal(kind, r, v) for r, v in pairs]) == values
    assert len({s[:NONCE_SIZE] for s in sealed}) == len(sealed)  # a nonce per value


def test_bulk_sealing_refuses_a_long_value_and_unequal_lists(vault: Vault) -> None:
    with pytest.raises(InvalidInput) as caught:
        vault.seal_many("kit.content", ["a", "b"], ["saline", "secret-arm-" * 4])
    assert str(caught.value) == (
        "a value is too long to seal as kit.content: at most 32 bytes of UTF-8"
    )
    with pytest.raises(ValueError, match="one row per value"):
        vault.seal_many("kit.content", ["a"], [])
    with pytest.raises(ValueError, match="one row per sealed value"):
        vault.open_many("kit.content", [], [vault.seal("kit.content", "a", "saline")])


def test_padding_that_is_not_zero_fails_to_open(vault: Vault) -> None:
    # Sealed with the data key by hand, the tag is right but the padding is not zeros.
    nonce = bytes(12)
    plaintext = b"\x06saline" + bytes(32 - 7) + b"\x01"
    associated_data = b"randomizer/v1\0exosome-ms\0kit.content\0kit:1"
    sealed = nonce + AESGCM(DATA_KEY).encrypt(nonce, plaintext, associated_data)
    assert_opaque_failure(vault, "kit.content", "kit:1", sealed)


@pytest.mark.parametrize("kind", sorted(SEALED_WIDTHS))
def test_all_sealed_values_of_a_kind_have_the_same_length(vault: Vault, kind: str) -> None:
    width = SEALED_WIDTHS[kind]
    values = ["exosome", "saline", "", "a", "é" * (width // 2), "x" * width]
    lengths = {len(vault.seal(kind, f"row:{index}", value)) for index, value in enumerate(values)}
    assert lengths == {12 + 1 + width + 16}
    assert sealed_size(kind) == 12 + 1 + width + 16


def test_a_value_longer_than_its_kind_is_refused_without_showing_it(vault: Vault) -> None:
    with pytest.raises(InvalidInput) as caught:
        vault.seal("slot.allocation", "slot:1", "secret-arm-" * 6)
    assert str(caught.value) == (
        "a value is too long to seal as slot.allocation: at most 64 bytes of UTF-8"
    )
    assert "secret" not in str(caught.value)


def test_an_unknown_kind_is_a_programming_error(vault: Vault) -> None:
    with pytest.raises(ValueError, match="unknown kind of sealed value 'slot.arms'"):
        vault.seal("slot.arms", "slot:1", "saline")
    with pytest.raises(ValueError, match="unknown kind"):
        vault.open("slot.arms", "slot:1", bytes(61))


def test_sealing_the_same_value_twice_uses_fresh_nonces(vault: Vault) -> None:
    sealed = [vault.seal("slot.allocation", "slot:1", "saline") for _ in range(100)]
    assert len(set(sealed)) == 100
    assert len({value[:12] for value in sealed}) == 100


def test_the_sealed_value_does_not_contain_the_plaintext(vault: Vault) -> None:
    assert b"exosome" not in vault.seal("slot.allocation", "slot:1", "exosome")


def test_a_ciphertext_moved_to_another_row_fails(vault: Vault) -> None:
    sealed = vault.seal("slot.allocation", "slot:1", "exosome")
    assert_opaque_failure(vault, "slot.allocation", "slot:2", sealed)


def test_a_ciphertext_moved_to_another_kind_fails(vault: Vault) -> None:
    sealed = vault.seal("slot.allocation", "1", "exosome")
    assert_opaque_failure(vault, "kit.content", "1", sealed)
    assert_opaque_failure(vault, "trial.seed", "1", sealed)


def test_a_ciphertext_moved_to_another_trial_fails() -> None:
    sealed = Vault(DATA_KEY, "exosome-ms").seal("slot.allocation", "slot:1", "exosome")
    assert_opaque_failure(Vault(DATA_KEY, "exosome-ms2"), "slot.allocation", "slot:1", sealed)


def test_associated_data_fields_cannot_be_shifted_across_a_separator() -> None:
    sealed = Vault(DATA_KEY, "t").seal("slot.allocation", "a\0b", "exosome")
    assert_opaque_failure(Vault(DATA_KEY, "t"), "slot.allocation", "a\0c", sealed)
    with pytest.raises(ValueError, match="NUL"):
        Vault(DATA_KEY, "t\0slot.arm")


def test_every_flipped_bit_fails(vault: Vault) -> None:
    sealed = vault.seal("kit.content", "kit:7", "saline")
    for position in range(len(sealed)):
        for bit in range(8):
            altered = bytearray(sealed)
            altered[position] ^= 1 << bit
            assert_opaque_failure(vault, "kit.content", "kit:7", bytes(altered))


def test_truncated_or_extended_ciphertexts_fail(vault: Vault) -> None:
    sealed = vault.seal("trial.seed", "trial", "ab" * 32)
    for length in range(len(sealed)):
        assert_opaque_failure(vault, "trial.seed", "trial", sealed[:length])
    assert_opaque_failure(vault, "trial.seed", "trial", sealed + b"\0")


def test_a_wrong_data_key_fails(vault: Vault) -> None:
    sealed = vault.seal("slot.allocation", "slot:1", "exosome")
    assert_opaque_failure(Vault(new_data_key(), TRIAL), "slot.allocation", "slot:1", sealed)


def test_a_ciphertext_opens_from_a_memoryview(vault: Vault) -> None:
    sealed = vault.seal("slot.allocation", "slot:1", "exosome")
    assert vault.open("slot.allocation", "slot:1", memoryview(sealed)) == "exosome"  # type: ignore[arg-type]


def test_the_vault_repr_shows_no_key(vault: Vault) -> None:
    assert repr(vault) == "Vault(trial_id='exosome-ms')"
    assert vault.trial_id == TRIAL


def test_a_vault_needs_a_32_byte_data_key() -> None:
    with pytest.raises(ValueError, match="a data key has 32 bytes, not 16"):
        Vault(bytes(16), TRIAL)


# Data key wrapping


def test_new_data_keys_are_32_random_bytes() -> None:
    keys = {new_data_key() for _ in range(100)}
    assert len(keys) == 100
    assert {len(key) for key in keys} == {32}


def test_a_wrong_trial_key_does_not_unwrap_the_data_key() -> None:
    wrapped = wrap_data_key(bytes(32), DATA_KEY)
    with pytest.raises(SealedDataError) as caught:
        unwrap_data_key(bytes([1] * 32), wrapped)
    assert str(caught.value) == NOT_CURRENT_KEY


def altered_wrappings(wrapped: bytes) -> Iterator[bytes]:
    for position in range(len(wrapped)):
        altered = bytearray(wrapped)
        altered[position] ^= 0x01
        yield bytes(altered)
    for length in range(len(wrapped)):
        yield wrapped[:length]
    yield wrapped + bytes(8)


def test_an_altered_wrapped_data_key_does_not_unwrap() -> None:
    trial_key = bytes(32)
    for altered in altered_wrappings(wrap_data_key(trial_key, DATA_KEY)):
        with pytest.raises(SealedDataError) as caught:
            unwrap_data_key(trial_key, altered)
        assert str(caught.value) == NOT_CURRENT_KEY


def test_a_wrapped_key_of_the_wrong_size_does_not_unwrap() -> None:
    trial_key = bytes(32)
    with pytest.raises(SealedDataError, match="^the key file does not open"):
        unwrap_data_key(trial_key, aes_key_wrap_with_padding(trial_key, bytes(16)))


def test_wrapping_checks_key_sizes() -> None:
    with pytest.raises(ValueError, match="a trial key has 32 bytes, not 24"):
        wrap_data_key(RFC5649_KEK, DATA_KEY)
    with pytest.raises(ValueError, match="a data key has 32 bytes, not 31"):
        wrap_data_key(bytes(32), bytes(31))
    with pytest.raises(ValueError, match="a trial key has 32 bytes"):
        unwrap_data_key(RFC5649_KEK, bytes(40))


def test_a_rewrapped_data_key_opens_under_the_new_trial_key_only(vault: Vault) -> None:
    old_key, new_key = bytes(32), bytes([9] * 32)
    sealed = vault.seal("slot.allocation", "slot:1", "exosome")
    rewrapped = wrap_data_key(new_key, unwrap_data_key(old_key, wrap_data_key(old_key, DATA_KEY)))
    with pytest.raises(SealedDataError):
        unwrap_data_key(old_key, rewrapped)
    reopened = Vault(unwrap_data_key(new_key, rewrapped), TRIAL)
    assert reopened.open("slot.allocation", "slot:1", sealed) == "exosome"


# The audit MAC key


def hkdf_sha256(key: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with an empty salt, written out with the standard library."""
    pseudorandom_key = stdlib_hmac.new(bytes(32), key, hashlib.sha256).digest()
    output, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = stdlib_hmac.new(
            pseudorandom_key, block + info + bytes([counter]), hashlib.sha256
        ).digest()
        output += block
    return output[:length]


def test_the_audit_key_is_hkdf_sha256_of_the_data_key(vault: Vault) -> None:
    expected = hkdf_sha256(DATA_KEY, b"randomizer/v1 audit-mac", 32)
    assert vault.audit_key() == expected
    assert vault.audit_key() != DATA_KEY
    assert Vault(new_data_key(), TRIAL).audit_key() != expected


def test_the_mac_is_hmac_sha256_under_the_audit_key(vault: Vault) -> None:
    event = b'{"action":"init"}'
    expected = stdlib_hmac.new(vault.audit_key(), event, hashlib.sha256).digest()
    assert vault.mac(event) == expected
    assert vault.verify_mac(event, expected)
    assert not vault.verify_mac(event + b" ", expected)
    assert not vault.verify_mac(event, expected[:-1])


# Key files


def test_create_key_file_writes_32_base64_bytes_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "trial.key"
    previous = os.umask(0)
    try:
        key = create_key_file(path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == base64.b64encode(key) + b"\n"
    assert len(key) == 32
    assert read_key_file(path) == key


def test_create_key_file_sets_0600_even_under_a_restrictive_umask(tmp_path: Path) -> None:
    path = tmp_path / "trial.key"
    previous = os.umask(0o277)
    try:
        key = create_key_file(path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == key


def test_create_key_file_makes_a_new_key_each_time(tmp_path: Path) -> None:
    assert create_key_file(tmp_path / "a.key") != create_key_file(tmp_path / "b.key")


def test_create_key_file_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "trial.key"
    path.write_text("precious\n")
    with pytest.raises(KeyFileError) as caught:
        create_key_file(path)
    assert str(caught.value) == (
        f"key file {path} already exists: refusing to overwrite it; "
        "choose another path or move the old file away"
    )
    assert path.read_text() == "precious\n"


def test_create_key_file_does_not_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "trial.key"
    link.symlink_to(target)
    with pytest.raises(KeyFileError, match="already exists"):
        create_key_file(link)
    assert not target.exists()


def test_create_key_file_in_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "trial.key"
    with pytest.raises(KeyFileError) as caught:
        create_key_file(path)
    assert str(caught.value) == f"cannot create key file {path}: No such file or directory"


def write_key_file(path: Path, content: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_read_key_file_refuses_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(KeyFileError) as caught:
        read_key_file(path)
    assert str(caught.value) == f"key file {path} not found: give the path of the trial's key file"
    assert caught.value.hint is Hint.KEY_FILE


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        (0o644, "readable by others (mode 0644)"),
        (0o604, "readable by others (mode 0604)"),
        (0o640, "readable by its group (mode 0640)"),
        (0o660, "readable by its group (mode 0660)"),
        (0o620, "accessible by its group (mode 0620)"),
        (0o601, "accessible by others (mode 0601)"),
        (0o641, "accessible by others (mode 0641)"),
    ],
)
def test_read_key_file_refuses_a_file_others_can_access(
    tmp_path: Path, mode: int, problem: str
) -> None:
    path = write_key_file(tmp_path / "trial.key", base64.b64encode(DATA_KEY) + b"\n", mode)
    with pytest.raises(KeyFileError) as caught:
        read_key_file(path)
    assert str(caught.value) == f"key file {path} is {problem}: chmod 600 {path}"


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_read_key_file_accepts_owner_only_modes(tmp_path: Path, mode: int) -> None:
    path = write_key_file(tmp_path / "trial.key", base64.b64encode(DATA_KEY) + b"\n", mode)
    assert read_key_file(path) == DATA_KEY


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_read_key_file_refuses_a_key_of_the_wrong_size(tmp_path: Path, size: int) -> None:
    path = write_key_file(tmp_path / "trial.key", base64.b64encode(bytes(size)) + b"\n")
    with pytest.raises(KeyFileError) as caught:
        read_key_file(path)
    assert str(caught.value) == (
        f"key file {path} holds a {size}-byte key, not 32 bytes: is it the right file?"
    )


@pytest.mark.parametrize(
    "content",
    [b"not base64 at all!\n", b"\xff\xfe\x00garbage", base64.b64encode(DATA_KEY)[:-1] + b"\n"],
)
def test_read_key_file_refuses_garbage(tmp_path: Path, content: bytes) -> None:
    path = write_key_file(tmp_path / "trial.key", content)
    with pytest.raises(KeyFileError) as caught:
        read_key_file(path)
    assert str(caught.value) == (
        f"key file {path} does not hold a base64-encoded key: is it the right file?"
    )


def test_read_key_file_refuses_a_large_file(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "trial.key", b"A" * 100_000)
    with pytest.raises(KeyFileError, match="too large to be a key file"):
        read_key_file(path)


def test_read_key_file_refuses_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="^key file .* is not a regular file$"):
        read_key_file(path)


def test_read_key_file_tolerates_surrounding_whitespace(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "trial.key", b"  " + base64.b64encode(DATA_KEY) + b"\r\n\n")
    assert read_key_file(path) == DATA_KEY


def test_a_different_key_file_does_not_open_the_trial(tmp_path: Path) -> None:
    first = create_key_file(tmp_path / "first.key")
    create_key_file(tmp_path / "second.key")
    wrapped = wrap_data_key(first, DATA_KEY)
    with pytest.raises(SealedDataError) as caught:
        unwrap_data_key(read_key_file(tmp_path / "second.key"), wrapped)
    assert str(caught.value) == NOT_CURRENT_KEY
    assert unwrap_data_key(read_key_file(tmp_path / "first.key"), wrapped) == DATA_KEY


def test_read_key_file_refuses_a_fifo(tmp_path: Path) -> None:
    path = tmp_path / "trial.key"
    os.mkfifo(path, 0o600)
    with pytest.raises(KeyFileError, match="^key file .* is not a regular file$"):
        read_key_file(path)


def test_read_key_file_follows_a_symlink_to_a_private_key_file(tmp_path: Path) -> None:
    key = create_key_file(tmp_path / "real.key")
    (tmp_path / "link.key").symlink_to(tmp_path / "real.key")
    assert read_key_file(tmp_path / "link.key") == key
