"""Uniformity over many seeds: block patterns and block-size choices (chi-square)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from itertools import permutations

import pytest
from scipy.stats import chisquare

from randomizer.allocation.generator import generate_schedule
from randomizer.allocation.stream import WordStream
from tests.support.designs import make_design

SEEDS = [hashlib.sha256(f"uniformity/{k}".encode()).digest() for k in range(20_000)]
PATTERNS = sorted(set(permutations("aabb")))  # the 6 orders of a 1:1 block of 4
ONE_BLOCK_OF_4 = make_design(["a", "b"], [1, 1], [4], 4)


def p_value(observed: Sequence[Hashable], categories: Sequence[Hashable]) -> float:
    """Chi-square p-value of ``observed`` against equal shares of ``categories``."""
    counts = Counter(observed)
    assert set(counts) <= set(categories), set(counts) - set(categories)
    table = [counts[c] for c in categories]
    expected = [len(observed) / len(categories)] * len(categories)
    return float(chisquare(table, expected).pvalue)


def first_block(seed: bytes) -> tuple[str, ...]:
    return tuple(generate_schedule(ONE_BLOCK_OF_4, seed).strata[0].arms())


def sattolo_first_block(seed: bytes) -> tuple[str, ...]:
    """A classic mistake (j = uniform(i) instead of uniform(i + 1)): only cycles."""
    block = list("aabb")
    words = WordStream(seed, "stratum:all/shuffle")
    for i in range(3, 0, -1):
        j = words.uniform(i)
        block[i], block[j] = block[j], block[i]
    return tuple(block)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shuffle", "uniform"), [(first_block, True), (sattolo_first_block, False)]
)
def test_block_patterns_are_uniform(
    shuffle: Callable[[bytes], tuple[str, ...]], uniform: bool
) -> None:
    # The second case checks that this test can fail: a biased shuffle is caught.
    p = p_value([shuffle(seed) for seed in SEEDS], PATTERNS)
    assert (p > 0.001) is uniform, p


@pytest.mark.slow
def test_block_size_choice_is_uniform() -> None:
    sizes = [2, 4, 6]
    design = make_design(["a", "b"], [1, 1], sizes, 1)  # one block per list
    chosen = [int(generate_schedule(design, seed).strata[0].block_size[0]) for seed in SEEDS]
    assert p_value(chosen, sizes) > 0.001
    # The test can fail: a plausible slip (uniform(4), clamped to the last size)
    # over the same words is caught.
    slipped = [sizes[min(WordStream(seed, "stratum:all/sizes").uniform(4), 2)] for seed in SEEDS]
    assert p_value(slipped, sizes) < 0.001
