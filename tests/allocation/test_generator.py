"""The permuted-block generator: known answers, agreement with the reference, invariants."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from itertools import combinations, islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from randomizer.allocation import generator as generator_module
from randomizer.allocation import stream as stream_module
from randomizer.allocation.generator import (
    Schedule,
    ScheduledSlot,
    StratumSchedule,
    generate_schedule,
)
from randomizer.allocation.stream import parse_seed
from randomizer.design import TrialDesign, load_design
from randomizer.errors import InvalidInput
from tests.allocation import reference
from tests.allocation.generator_helpers import design_of_vector, rows, vector_cases
from tests.support.designs import make_design

ROOT = Path(__file__).resolve().parents[2]
SEED = parse_seed("3f8a1c5e9b2d47f0a6c1e8b3d5f7092a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d")
TWO_FACTORS = {"type": ["PPMS", "SPMS"], "edss": ["low", "high"]}


def both(design: TrialDesign, seed: bytes, length: int | None = None) -> list[reference.RefSlot]:
    """The list from both implementations, after checking that they agree."""
    schedule = generate_schedule(design, seed, length)
    expected = reference.generate(design, seed, length)
    assert rows(schedule) == expected
    assert schedule.digest() == reference.digest(expected)
    return expected


# Known answers ---------------------------------------------------------------


@vector_cases("generator.json")
def test_independent_vectors(case: dict[str, Any]) -> None:
    design = design_of_vector(case)
    seed = parse_seed(case["seed"])
    expected = [
        (stratum, s["sequence"], s["block"], s["block_size"], s["arm"])
        for stratum, slots in case["expected"].items()
        for s in slots
    ]

    assert rows(generate_schedule(design, seed)) == expected
    assert reference.generate(design, seed) == expected


@vector_cases("generator_digests.json")
def test_frozen_list_digests(case: dict[str, Any]) -> None:
    if "shipped" in case:
        design = load_design(case["shipped"])
    else:
        design = make_design(**case["design"])
    seed = parse_seed(case["seed"])
    schedule = generate_schedule(design, seed, case["stratum_length"])
    expected = reference.generate(design, seed, case["stratum_length"])

    assert (len(schedule), schedule.digest()) == (case["slots"], case["digest"])
    assert (len(expected), reference.digest(expected)) == (case["slots"], case["digest"])


def test_digest_is_sha256_of_the_csv_text() -> None:
    design = make_design(["drug", "placebo"], [3, 2], [5, 10, 15], 40, {"site": ["WAW", "KRK"]})
    schedule = generate_schedule(design, SEED)
    text = "stratum,sequence,block,block_size,arm\n" + "".join(
        f"{s.stratum},{s.sequence},{s.block},{s.block_size},{s.arm}\n" for s in schedule.slots()
    )
    import hashlib

    assert schedule.digest() == hashlib.sha256(text.encode()).hexdigest()


def test_digest_across_chunks_and_digit_widths() -> None:
    # More than one digest chunk per stratum, sequences past 99,999, block sizes of 3 digits.
    design = make_design(["a", "b"], [1, 1], [2, 100, 400], 140_000)
    both(design, SEED)


def json_text(schedule: Schedule) -> bytes:
    """What json.dumps(indent=2) makes of the slots under a top-level key, in UTF-8."""
    slots = [
        {
            "stratum": s.stratum,
            "sequence": s.sequence,
            "block": s.block,
            "block_size": s.block_size,
            "arm": s.arm,
        }
        for s in schedule.slots()
    ]
    return json.dumps({"slots": slots}, indent=2, ensure_ascii=False).encode("utf-8")


def csv_text(schedule: Schedule) -> bytes:
    return (
        "stratum,sequence,block,block_size,arm\n"
        + "".join(
            f"{s.stratum},{s.sequence},{s.block},{s.block_size},{s.arm}\n" for s in schedule.slots()
        )
    ).encode("utf-8")


@pytest.mark.parametrize(
    ("arms", "ratio", "sizes", "length", "factors"),
    [
        # sequences past 9, 99, 999 and 9,999 and blocks past 9, 99 and 999, in more than one
        # chunk of rows; arms of different lengths; block sizes of 1, 2 and 3 digits
        (["a", "placebo", "drug-x"], [1, 1, 1], [3, 12, 300], 20_000, TWO_FACTORS),
        (["aa", "bb"], [1, 1], [2], 12_345, {}),  # every row the same length: no padding
        (["drug", "placebo"], [3, 2], [5, 10, 15], 1, {"site": ["WAW", "KRK"]}),
    ],
)
def test_text_chunks_are_the_csv_and_json_of_the_slots(
    arms: list[str], ratio: list[int], sizes: list[int], length: int, factors: dict[str, list[str]]
) -> None:
    schedule = generate_schedule(make_design(arms, ratio, sizes, length, factors), SEED)
    chunks = list(schedule.csv_chunks())
    assert b"".join(chunks) == csv_text(schedule)
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == schedule.digest()
    slots = b"".join(schedule.json_slot_chunks())
    assert b'{\n  "slots": [' + slots + b"\n  ]\n}" == json_text(schedule)
    if len(schedule) > 10_000:
        assert len(chunks) > 2, "the list fits one chunk: the chunk boundaries go untested"


def test_json_chunks_escape_names_as_json_does() -> None:
    # Design validation keeps names plain; the layout must not rely on it.
    one = np.ones(3, dtype=np.int32)
    stratum = StratumSchedule(
        stratum='lev\u00e9l "q" \\ \u2603',
        arm_ids=("\u00e4", "b\tc"),
        block=one,
        block_size=np.full(3, 4, dtype=np.int16),
        arm_index=np.array([0, 1, 0], dtype=np.int16),
    )
    schedule = Schedule(arm_ids=stratum.arm_ids, strata=(stratum,))
    assert b'{\n  "slots": [' + b"".join(schedule.json_slot_chunks()) + b"\n  ]\n}" == json_text(
        schedule
    )
    assert b"".join(schedule.csv_chunks()) == csv_text(schedule)


# Agreement with the reference on random designs and seeds ------------------------

RATIOS = [(1, 1), (2, 1), (1, 2, 1), (1, 1, 1), (3, 2)]
BLOCK_MULTIPLES = [m for k in (1, 2, 3) for m in combinations((1, 2, 3, 4), k)]
FACTOR_SETS: list[dict[str, list[str]]] = [
    {},
    {"site": ["WAW", "KRK"]},
    {"site": ["WAW", "KRK", "GDA"]},
    TWO_FACTORS,
]


@st.composite
def designs(draw: st.DrawFn) -> tuple[TrialDesign, int | None]:
    ratio = draw(st.sampled_from(RATIOS))
    unit = sum(ratio)
    multiples = draw(st.sampled_from(BLOCK_MULTIPLES))
    arms = ["a", "b", "c"][: len(ratio)]
    length = draw(st.integers(1, 60))
    design = make_design(
        arms, ratio, [m * unit for m in multiples], length, draw(st.sampled_from(FACTOR_SETS))
    )
    override = draw(st.none() | st.integers(1, 40))
    return design, override


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=designs(), seed=st.binary(min_size=32, max_size=32))
def test_vectorised_equals_reference(case: tuple[TrialDesign, int | None], seed: bytes) -> None:
    design, length = case
    both(design, seed, length)


@pytest.mark.parametrize(
    ("ratio", "sizes", "factors"),
    [
        ((1, 1), [6], {}),
        ((2, 1), [3, 6], {}),
        ((1, 2, 1), [4, 8, 12], {}),
        ((1, 1), [2, 4, 6], TWO_FACTORS),
    ],
)
def test_vectorised_equals_reference_on_long_lists(
    ratio: tuple[int, ...], sizes: list[int], factors: dict[str, list[str]]
) -> None:
    design = make_design(["a", "b", "c"][: len(ratio)], ratio, sizes, 3000, factors)
    for k in range(3):
        both(design, bytes([k]) * 32)


def tampered_words(seed: bytes, label: str) -> Iterator[int]:
    """The real stream with 2**64 - 1 (rejected by uniform(n) unless n is a power of 2)
    inserted at a few places, twice in a row at one of them."""
    real = reference.shake_words(seed, label)
    for position in range(10**9):
        if position in (0, 3, 4, 9, 20):
            yield 2**64 - 1
        else:
            yield next(real)


def test_rejected_words_are_skipped_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Real rejections are too rare to meet; feed both implementations the same
    # stream with rejected words in it, through the vectorised code's exact path.
    def fake_stream_words(
        seed: bytes, label: str, count: int
    ) -> np.ndarray[Any, np.dtype[np.uint64]]:
        return np.fromiter(islice(tampered_words(seed, label), count), dtype=np.uint64, count=count)

    design = make_design(["a", "b"], [1, 1], [2, 4, 6], 30, TWO_FACTORS)
    untampered = generate_schedule(design, SEED)
    monkeypatch.setattr(generator_module, "stream_words", fake_stream_words)
    monkeypatch.setattr(stream_module, "stream_words", fake_stream_words)

    tampered = generate_schedule(design, SEED)
    assert rows(tampered) == reference.generate(design, SEED, words=tampered_words)
    assert tampered != untampered  # the tampering did reach the list


# Properties of every list -------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "sizes"),
    [
        ((1, 1), [4, 6]),
        ((2, 1), [3, 6, 9]),
        ((1, 2, 1), [4, 8]),
        ((3, 2), [5, 10]),
    ],
)
def test_every_block_is_balanced_to_the_ratio(ratio: tuple[int, ...], sizes: list[int]) -> None:
    arms = ["a", "b", "c"][: len(ratio)]
    design = make_design(arms, ratio, sizes, 500, TWO_FACTORS)
    for k in range(5):
        schedule = generate_schedule(design, bytes([k + 1]) * 32)
        blocks: dict[tuple[str, int], list[ScheduledSlot]] = {}
        for slot in schedule.slots():
            blocks.setdefault((slot.stratum, slot.block), []).append(slot)
        assert len(blocks) > 4 * 500 // max(sizes)
        for block in blocks.values():
            size = block[0].block_size
            assert size in sizes
            assert len(block) == size
            assert all(slot.block_size == size for slot in block)
            counts = Counter(slot.arm for slot in block)
            assert [counts[arm] for arm in arms] == [r * size // sum(ratio) for r in ratio]


@pytest.mark.parametrize("length", [1, 2, 5, 19, 20, 21, 100, 1001])
def test_each_stratum_reaches_its_length_with_whole_blocks(length: int) -> None:
    design = make_design(["a", "b"], [1, 1], [2, 4, 6], length, TWO_FACTORS)
    for k in range(10):
        schedule = generate_schedule(design, bytes([k]) * 32)
        assert [s.stratum for s in schedule.strata] == list(design.strata())
        for stratum in schedule.strata:
            sequence = [slot.sequence for slot in stratum.slots()]
            assert sequence == list(range(1, len(stratum) + 1))
            last_block = [slot for slot in stratum.slots() if slot.block == stratum.blocks]
            # At least the length, and the last block was needed to get there.
            assert len(stratum) >= length
            assert len(stratum) - len(last_block) < length
            assert [s.block for s in stratum.slots()] == sorted(s.block for s in stratum.slots())


def test_stratum_length_override_and_default() -> None:
    design = make_design(["a", "b"], [1, 1], [4], 12)
    assert len(generate_schedule(design, SEED)) == 12
    assert len(generate_schedule(design, SEED, 13)) == 16
    assert len(generate_schedule(design, SEED, 1)) == 4


def test_adding_a_level_leaves_the_other_strata_unchanged() -> None:
    small = make_design(
        ["a", "b"], [1, 1], [2, 4, 6], 50, {"type": ["PPMS", "SPMS"], "edss": ["low", "high"]}
    )
    large = make_design(
        ["a", "b"],
        [1, 1],
        [2, 4, 6],
        50,
        {"type": ["PPMS", "SPMS", "RRMS"], "edss": ["low", "mid", "high"]},
    )
    before = generate_schedule(small, SEED)
    after = generate_schedule(large, SEED)
    assert len(after.strata) == 9
    for stratum in before.strata:
        assert after.stratum(stratum.stratum) == stratum
    assert after.stratum("edss=mid;type=PPMS") != after.stratum("edss=low;type=PPMS")


def test_same_seed_gives_the_same_list_in_a_fresh_process() -> None:
    design_text = (
        "from tests.support.designs import make_design\n"
        "from randomizer.allocation.generator import generate_schedule\n"
        f"d = make_design(['a', 'b', 'c'], [1, 2, 1], [4, 8], 200, {TWO_FACTORS!r})\n"
        f"print(generate_schedule(d, bytes.fromhex({SEED.hex()!r})).digest())\n"
    )
    design = make_design(["a", "b", "c"], [1, 2, 1], [4, 8], 200, TWO_FACTORS)
    here = generate_schedule(design, SEED).digest()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", design_text],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip() == here


def test_different_seeds_give_different_lists() -> None:
    design = load_design("exosome-ms")
    lists = {generate_schedule(design, bytes([k]) * 32).digest() for k in range(20)}
    assert len(lists) == 20
    one_bit = bytearray(SEED)
    one_bit[31] ^= 1
    assert generate_schedule(design, bytes(one_bit)) != generate_schedule(design, SEED)


# The Schedule value --------------------------------------------------------------


def test_schedule_columns_counts_and_slots() -> None:
    design = make_design(["exosome", "saline"], [1, 1], [4, 6], 20, TWO_FACTORS)
    schedule = generate_schedule(design, SEED)
    assert isinstance(schedule, Schedule)
    assert schedule.arm_ids == ("exosome", "saline")
    slots = list(schedule.slots())
    assert len(schedule) == len(slots) == sum(len(s) for s in schedule.strata)
    counts = schedule.counts()
    assert list(counts) == list(design.strata())
    for key, per_arm in counts.items():
        mine = [slot.arm for slot in slots if slot.stratum == key]
        assert per_arm == {"exosome": mine.count("exosome"), "saline": mine.count("saline")}
        assert per_arm["exosome"] == per_arm["saline"]  # whole 1:1 blocks
    first = schedule.strata[0]
    assert first.arms() == [slot.arm for slot in first.slots()]
    assert first.blocks == slots[len(first) - 1].block
    with pytest.raises(KeyError):
        schedule.stratum("edss=mid;type=PPMS")


def test_schedule_columns_are_read_only() -> None:
    stratum = generate_schedule(load_design("exosome-ms"), SEED).strata[0]
    with pytest.raises(ValueError, match="read-only"):
        stratum.arm_index[0] = 1


@pytest.mark.parametrize("text", ["a,b", "a\nb", "", "a\0"])
def test_stratum_schedule_refuses_names_that_would_break_the_csv(text: str) -> None:
    column = np.zeros(1, dtype=np.int16)
    with pytest.raises(ValueError, match="commas, line breaks and NUL"):
        StratumSchedule("all", ("a", text), np.ones(1, dtype=np.int32), column + 2, column)
    with pytest.raises(ValueError, match="commas, line breaks and NUL"):
        StratumSchedule(text, ("a", "b"), np.ones(1, dtype=np.int32), column + 2, column)


# Bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, -1, 10_000_001])
def test_stratum_length_must_be_in_range(length: int) -> None:
    with pytest.raises(InvalidInput, match=f"between 1 and 10000000, got {length}$"):
        generate_schedule(load_design("exosome-ms"), SEED, length)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33)])
def test_seed_must_be_32_bytes(seed: bytes) -> None:
    with pytest.raises(InvalidInput, match="seed must be 32 bytes"):
        generate_schedule(load_design("exosome-ms"), seed)
