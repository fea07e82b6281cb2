"""Kit codes: check-character vectors, error detection, uniformity and parsing."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare

from randomizer.allocation.kits import (
    ALPHABET,
    check_character,
    code_texts,
    is_valid,
    new_code,
    new_code_numbers,
    new_codes,
    parse_code,
)
from randomizer.errors import KitCodeError, RandomizerError

DATA = Path(__file__).resolve().parent.parent / "data"
CANONICAL = re.compile(rf"^[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}$")


def load_vectors(name: str) -> dict[str, Any]:
    """Load a JSON vector file from tests/data."""
    vectors: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return vectors


KIT_VECTORS = load_vectors("kit_codes.json")


def shake_token_bytes(seed: bytes, size: int = 1 << 20) -> Callable[[int], bytes]:
    """A reproducible stand-in for secrets.token_bytes: consecutive SHAKE-256 output."""
    pool = hashlib.shake_256(seed).digest(size)
    position = 0

    def token_bytes(n: int) -> bytes:
        nonlocal position
        chunk = pool[position : position + n]
        position += n
        assert len(chunk) == n, "test stream exhausted"
        return chunk

    return token_bytes


def sample_codes(count: int) -> list[str]:
    """Reproducible codes without the dash."""
    return [
        code.replace("-", "") for code in new_codes(count, token_bytes=shake_token_bytes(b"sample"))
    ]


def repeated(byte: int, n: int) -> bytes:
    """A random source that always returns ``byte``."""
    return bytes([byte]) * n


# Known-answer vectors


@pytest.mark.parametrize("case", KIT_VECTORS["cases"], ids=lambda case: case["code"])
def test_check_character_vectors(case: dict[str, str]) -> None:
    assert check_character(case["payload"]) == case["check"]
    assert is_valid(case["code"])
    assert parse_code(case["code"]) == case["code"]
    assert case["code"] == f"{case['payload'][:4]}-{case['payload'][4:]}{case['check']}"


@pytest.mark.parametrize("code", KIT_VECTORS["invalid"])
def test_invalid_vectors_fail_their_check_character(code: str) -> None:
    assert not is_valid(code)
    with pytest.raises(KitCodeError) as caught:
        parse_code(code)
    assert str(caught.value) == (
        f"kit code {code} fails its check character: probably a typo; check the label"
    )


def test_a_valid_code_runs_to_zero_so_its_check_of_the_full_code_is_zero() -> None:
    # m(0) = 0: appending the check of a valid code's first 8 characters gives "0"
    for case in KIT_VECTORS["cases"]:
        assert check_character(case["code"].replace("-", "")) == "0"


# Error detection


def test_every_single_substitution_is_detected() -> None:
    for code in sample_codes(300):
        assert is_valid(code)
        for position, original in enumerate(code):
            for character in ALPHABET:
                if character != original:
                    typo = code[:position] + character + code[position + 1 :]
                    assert not is_valid(typo), (code, typo)


def test_every_adjacent_transposition_of_distinct_characters_is_detected() -> None:
    for code in sample_codes(300):
        for position in range(len(code) - 1):
            a, b = code[position], code[position + 1]
            if a != b:
                typo = code[:position] + b + a + code[position + 2 :]
                assert not is_valid(typo), (code, typo)


@pytest.mark.parametrize("position", range(7))
def test_every_pair_of_characters_transposed_at_every_position_is_detected(
    position: int,
) -> None:
    # at position 6 the second character is the check character itself
    context = sample_codes(1)[0]
    for a in ALPHABET:
        for b in ALPHABET:
            payload = (context[:position] + a + b + context[position + 2 :])[:7]
            code = payload + check_character(payload)
            x, y = code[position], code[position + 1]
            if x != y:
                typo = code[:position] + y + x + code[position + 2 :]
                assert not is_valid(typo), (code, typo)


def test_zero_and_z_transposed_are_caught_where_luhn_mod_32_misses_them() -> None:
    code = "0Z00000" + check_character("0Z00000")
    assert not is_valid("Z000000" + code[7])


# Generation


def test_new_code_is_formatted_and_valid() -> None:
    code = new_code()
    assert CANONICAL.match(code)
    assert is_valid(code)


def test_new_code_maps_bytes_without_modulo_bias() -> None:
    # every byte value once per position: each character exactly 256 / 32 = 8 times
    counts: Counter[str] = Counter()
    for byte in range(256):
        code = new_code(functools.partial(repeated, byte))
        counts.update(code[:4] + code[5:8])
    assert set(counts) == set(ALPHABET)
    assert set(counts.values()) == {8 * 7}


def test_new_code_takes_its_payload_from_the_random_source() -> None:
    assert new_code(lambda n: bytes(range(1, n + 1))) == "1234-567Y"


def test_new_code_refuses_a_short_random_source() -> None:
    with pytest.raises(ValueError, match="returned 6 bytes"):
        new_code(lambda n: bytes(n - 1))


@pytest.mark.slow
def test_100000_codes_from_the_os_csprng_are_unique_and_valid() -> None:
    codes = new_codes(100_000)
    assert len(set(codes)) == 100_000
    assert all(CANONICAL.match(code) and is_valid(code) for code in codes)


@pytest.mark.slow
def test_100000_codes_are_uniform_per_position() -> None:
    # A fixed SHAKE-256 stream stands in for the CSPRNG: the byte-to-character
    # mapping under test is the same, and a fixed stream cannot fail at random.
    codes = new_codes(100_000, token_bytes=shake_token_bytes(b"uniformity", 800_000))
    assert len(set(codes)) == 100_000
    for position in range(8):
        counts = Counter(code.replace("-", "")[position] for code in codes)
        observed = [counts[character] for character in ALPHABET]
        assert chisquare(observed).pvalue > 0.001, (position, observed)


def test_new_codes_skip_taken_and_repeated_codes() -> None:
    source = iter([1, 1, 2, 3, 4])
    taken = [new_code(functools.partial(repeated, 2))]
    codes = new_codes(2, taken=taken, token_bytes=lambda n: repeated(next(source), n))
    assert codes == [new_code(functools.partial(repeated, b)) for b in (1, 3)]


def test_bulk_codes_are_the_codes_drawn_one_at_a_time() -> None:
    # A stream with few distinct codes (2 choices per character: 128 codes) repeats
    # itself often, so both ways skip repeats and taken codes many times.
    stream = bytes(b & 1 for b in hashlib.shake_256(b"few codes").digest(7 * 5000))

    def source() -> Callable[[int], bytes]:
        position = 0

        def token_bytes(n: int) -> bytes:
            nonlocal position
            position += n
            return stream[position - n : position]

        return token_bytes

    taken = new_codes(3, token_bytes=source())
    one_at_a_time: list[str] = []
    draw = source()
    while len(one_at_a_time) < 100:
        code = new_code(draw)
        if code not in one_at_a_time and code not in taken:
            one_at_a_time.append(code)
    numbers = new_code_numbers(100, taken=taken, token_bytes=source())
    assert numbers.shape == (100,) and int(numbers.max()) < 2**35
    assert code_texts(numbers) == one_at_a_time == new_codes(100, taken, source())
    assert all(is_valid(code) for code in one_at_a_time)


def test_new_codes_of_zero_is_empty() -> None:
    assert new_codes(0) == []


def test_new_codes_give_up_on_a_source_that_repeats_itself() -> None:
    with pytest.raises(RandomizerError, match="could not draw 2 distinct new kit codes"):
        new_codes(2, token_bytes=bytes)


# Parsing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "ABCU-1234",
            "kit code 'ABCU-1234' has an invalid character 'U': "
            "kit codes use the digits and the letters A-Z except U",
        ),
        (
            "1234-56*Y",
            "kit code '1234-56*Y' has an invalid character '*': "
            "kit codes use the digits and the letters A-Z except U",
        ),
        ("1234-567", "kit code '1234-567' has 7 characters, not 8: expected XXXX-XXXX"),
        ("1234-567Y0", "kit code '1234-567Y0' has 9 characters, not 8: expected XXXX-XXXX"),
        ("", "kit code '' is empty: expected XXXX-XXXX"),
        (" - ", "kit code ' - ' is empty: expected XXXX-XXXX"),
        (
            "abcd-efgh",
            "kit code ABCD-EFGH fails its check character: probably a typo; check the label",
        ),
        ("1234\n567", "kit code '1234\\n567' has 7 characters, not 8: expected XXXX-XXXX"),
    ],
)
def test_parse_code_refusals_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(KitCodeError) as caught:
        parse_code(text)
    assert str(caught.value) == message


def test_parse_code_shortens_long_input_in_its_message() -> None:
    with pytest.raises(KitCodeError) as caught:
        parse_code("7" * 1000)
    assert len(str(caught.value)) < 120


@pytest.mark.parametrize(
    "text",
    ["1234-567y", "1234567Y", " 12 34 - 56 7Y ", "I234-567Y", "l234-567y", "1-2-3-4-5-6-7-Y"],
)
def test_parse_code_forgives_case_spaces_dashes_and_lookalikes(text: str) -> None:
    assert parse_code(text) == "1234-567Y"


def test_parse_code_reads_o_as_zero() -> None:
    assert parse_code("oooo-ooo0") == "0000-0000"
    assert parse_code("OOOO OOOO") == "0000-0000"


def test_check_character_refuses_characters_outside_the_alphabet() -> None:
    with pytest.raises(KitCodeError, match="invalid character 'U'"):
        check_character("123456U")


def _assert_parses_or_refuses(text: str) -> None:
    try:
        code = parse_code(text)
    except KitCodeError as error:
        assert "\n" not in str(error)
        return
    assert CANONICAL.match(code)
    assert is_valid(code)
    assert parse_code(code) == code


@given(st.text())
def test_any_text_parses_to_a_valid_code_or_is_refused(text: str) -> None:
    _assert_parses_or_refuses(text)


@given(st.text(alphabet=ALPHABET + ALPHABET.lower() + "OoIiLlUu*- \t\n", max_size=12))
def test_code_like_text_parses_to_a_valid_code_or_is_refused(text: str) -> None:
    _assert_parses_or_refuses(text)


@given(payload=st.text(alphabet=ALPHABET, min_size=7, max_size=7), data=st.data())
def test_every_spelling_of_a_code_parses_to_its_canonical_form(
    payload: str, data: st.DataObject
) -> None:
    code = payload + check_character(payload)
    canonical = f"{code[:4]}-{code[4:]}"
    assert parse_code(canonical) == canonical
    spelled = [data.draw(st.sampled_from(["", " ", "-"]))]
    for character in code:
        variants = [character, character.lower()]
        if character == "0":
            variants += ["O", "o"]
        if character == "1":
            variants += ["I", "i", "L", "l"]
        spelled.append(data.draw(st.sampled_from(variants)))
        spelled.append(data.draw(st.sampled_from(["", "", " ", "-", "  "])))
    assert parse_code("".join(spelled)) == canonical
