"""The seeded stream (docs/architecture.md section 4): words, uniform draws, seeds."""

from __future__ import annotations

import hashlib
from itertools import islice
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from randomizer.allocation import stream as stream_module
from randomizer.allocation.stream import (
    WordStream,
    format_seed,
    largest_accepted,
    parse_seed,
    rejection_limit,
    stream_bytes,
    stream_words,
    uniform_draws,
)
from randomizer.errors import InvalidInput
from tests.allocation.generator_helpers import vector_cases
from tests.allocation.reference import Stream, shake_words

SEED = bytes(range(32))
MAX_WORD = 2**64 - 1


@vector_cases("generator.json")
def test_first_sizes_words_match_the_independent_vectors(case: dict[str, Any]) -> None:
    (key,) = [k for k in case if k.startswith("first_sizes_words_of_")]
    label = f"stratum:{key.removeprefix('first_sizes_words_of_')}/sizes"
    expected = [int(w) for w in case[key]]
    seed = parse_seed(case["seed"])

    assert stream_words(seed, label, len(expected)).tolist() == expected
    words = WordStream(seed, label)
    assert [words.next_word() for _ in expected] == expected
    assert list(islice(shake_words(seed, label), len(expected))) == expected


def test_stream_is_shake256_of_domain_seed_and_label() -> None:
    message = b"randomizer/v1\0" + SEED + b"\0" + "stratum:édss=hi/sizes".encode()
    raw = hashlib.shake_256(message).digest(24)
    assert stream_bytes(SEED, "stratum:édss=hi/sizes", 24) == raw
    expected = [int.from_bytes(raw[k : k + 8], "little") for k in (0, 8, 16)]
    assert stream_words(SEED, "stratum:édss=hi/sizes", 3).tolist() == expected


def test_longer_reads_extend_shorter_ones() -> None:
    long = stream_words(SEED, "x", 5000)
    assert long.dtype == np.uint64
    assert stream_words(SEED, "x", 10).tolist() == long[:10].tolist()
    words = WordStream(SEED, "x")
    assert [words.next_word() for _ in range(5000)] == long.tolist()
    assert words.position == 5000


def test_labels_and_seeds_give_different_streams() -> None:
    base = stream_words(SEED, "stratum:all/sizes", 4).tolist()
    assert stream_words(SEED, "stratum:all/shuffle", 4).tolist() != base
    assert stream_words(bytes(32), "stratum:all/sizes", 4).tolist() != base


@pytest.mark.parametrize(
    ("n", "limit"),
    [
        (1, 2**64),
        (2, 2**64),
        (3, 2**64 - 1),
        (4, 2**64),
        (5, 2**64 - 1),
        (6, 2**64 - 4),
        (10, 2**64 - 6),
        (1000, 2**64 - 616),
        (2**63 + 1, 2**63 + 1),
    ],
)
def test_rejection_limit(n: int, limit: int) -> None:
    assert rejection_limit(n) == limit
    assert int(largest_accepted(np.array([n], dtype=np.uint64))[0]) == limit - 1


def test_largest_accepted_matches_the_definition_for_every_block_position() -> None:
    moduli = np.arange(1, 1001, dtype=np.uint64)
    expected = [2**64 - (2**64 % n) - 1 for n in range(1, 1001)]
    assert largest_accepted(moduli).tolist() == expected


def test_uniform_one_consumes_a_word() -> None:
    words = WordStream(SEED, "x")
    assert [words.uniform(1) for _ in range(3)] == [0, 0, 0]
    assert words.position == 3
    assert words.next_word() == int(stream_words(SEED, "x", 4)[3])


def test_uniform_is_word_modulo_n_when_nothing_is_rejected() -> None:
    moduli = [2, 3, 5, 6, 7, 1000, 1]
    raw = stream_words(SEED, "x", len(moduli)).tolist()
    words = WordStream(SEED, "x")
    assert [words.uniform(n) for n in moduli] == [w % n for w, n in zip(raw, moduli, strict=True)]


@settings(max_examples=200, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    moduli=st.lists(st.integers(min_value=1, max_value=2**64 - 1), min_size=0, max_size=40),
)
def test_uniform_draws_equal_sequential_draws(seed: bytes, moduli: list[int]) -> None:
    # Moduli up to 2**64 - 1 make rejections common, so the exact path is exercised.
    draws, used = uniform_draws(seed, "x", np.array(moduli, dtype=np.uint64))
    words = WordStream(seed, "x")
    assert draws.tolist() == [words.uniform(n) for n in moduli]
    assert used == words.position
    reference = Stream(shake_words(seed, "x"))
    assert draws.tolist() == [reference.uniform(n) for n in moduli]


def test_uniform_draws_skip_rejected_words(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2**64 - 1 is rejected by uniform(3) and uniform(6) but accepted by uniform(4).
    fake = [MAX_WORD, 7, MAX_WORD, MAX_WORD, 8, MAX_WORD, 9, 10, 11]

    def fake_words(seed: bytes, label: str, count: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
        return np.array((fake + list(range(100, 100 + count)))[:count], dtype=np.uint64)

    monkeypatch.setattr(stream_module, "stream_words", fake_words)
    draws, used = uniform_draws(SEED, "x", np.array([3, 6, 4, 3, 5], dtype=np.uint64))
    assert draws.tolist() == [7 % 3, 8 % 6, MAX_WORD % 4, 9 % 3, 10 % 5]
    assert used == 8


@pytest.mark.parametrize(
    "text",
    [
        "00" * 32,
        "AbCdEf0123456789" * 4,
        "ff" * 32,
    ],
)
def test_parse_seed_accepts_64_hex_digits_either_case(text: str) -> None:
    seed = parse_seed(text)
    assert len(seed) == 32
    assert format_seed(seed) == text.lower()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00" * 31,
        "00" * 32 + "0",
        "0x" + "00" * 31,
        "g" + "0" * 63,
        " " + "0" * 63,
        "0" * 63 + "\n",
        "0" * 64 + "\n",
        "０" * 64,
        "00" * 32 + " ",
    ],
)
def test_parse_seed_rejects_anything_else(text: str) -> None:
    with pytest.raises(InvalidInput, match="^seed must be 64 hexadecimal digits") as info:
        parse_seed(text)
    assert "\n" not in str(info.value)


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(InvalidInput, match="seed must be 32 bytes"):
        stream_words(bytes(31), "x", 1)
    with pytest.raises(InvalidInput, match="seed must be 32 bytes"):
        format_seed(bytes(33))
    with pytest.raises(InvalidInput, match="seed must be 32 bytes"):
        WordStream(b"", "x")
