"""How well the next arm can be guessed, and how unbalanced a stratum can get (pure, no I/O).

The investigator of Blackwell and Hodges (1957) knows every arm given so far in
the stratum (through emergency unblindings, side effects, or simply by
watching) and guesses, for the next participant, the arm furthest below its
target share: with ``t`` participants so far, arm ``a`` is ``ratio[a] * t /
sum(ratio) - count[a]`` behind (for 1:1, the arm with fewer allocations). A tie
between ``k`` arms (as at the start of every block) is a guess at random among
them, right with probability ``1/k`` of the tied arms' chances. The figure is
the expected share of right guesses over the stratum's planned participants
(``stratum_length``): 50% is no better than a coin for 1:1, 100% is a list
anyone could predict.

Blocks are drawn as the generator draws them (docs/algorithm.md): block sizes
uniformly from the design's sizes until the stratum holds at least its planned
size, every arrangement of a block equally likely. Every complete block is
exactly balanced, so the guess depends only on where the current block stands;
the exact figure is a dynamic programme over (position in block, arms left in
the block) combined with the probability that a block starts at each position.
When that is too costly (very long strata, very large blocks, many arms) the
figure is estimated from lists made by the real generator over many seeds,
with its standard error.

The largest imbalance is measured as the reports measure it
(:func:`randomizer.reports.imbalance`): the spread of ``count / ratio`` between
arms, which is ``|a - b|`` for 1:1, and which the design bounds by
:meth:`~randomizer.design.TrialDesign.imbalance_bound`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from randomizer.allocation.generator import generate_schedule
from randomizer.design import TrialDesign
from randomizer.errors import InvalidInput

Method = Literal["exact", "simulation"]

ALTERNATIVE_BLOCK_SIZES: tuple[tuple[int, ...], ...] = ((2,), (4,), (2, 4), (4, 6), (2, 4, 6))
"""The usual alternatives compared with a design, besides one block of the whole stratum."""

SIMULATION_SEED = hashlib.sha256(b"randomizer/predictability/v1").digest()
"""The seed the simulated figures derive their lists' seeds from, so a report can be repeated."""

EXACT_WORK_LIMIT = 20_000_000
"""Most (position, arms left) table cells the exact computation walks through, all sizes."""

EXACT_STEP_LIMIT = 1_000_000
"""Most (block start, size) steps the exact computation takes for the block starts."""

SIMULATION_WORK = 200_000
"""A simulation's budget, in steps of the generator (see :func:`simulation_trials`)."""

SIMULATED_TRIALS = (20, 4000)
"""Fewest and most strata a simulation generates."""

_CHUNK = 1 << 20  # positions scored at once in a simulated stratum


@dataclass(frozen=True)
class Predictability:
    """The figures of one way of making blocks, for a stratum of ``participants``."""

    label: str
    """What the blocks are, in words: ``random sizes {4, 6}``, ``fixed blocks of 4``."""
    block_sizes: tuple[int, ...]
    participants: int
    correct_guesses: float
    """Expected share (0 to 1) of right guesses over the stratum's participants."""
    method: Method
    standard_error: float
    """Standard error of ``correct_guesses``: 0 when exact."""
    trials: int
    """Simulated strata (0 when exact)."""
    largest_imbalance: float
    """Largest spread of ``count / ratio`` that can occur at any point in the stratum."""
    design: bool = False
    """Whether these are the design's own block sizes."""


@dataclass(frozen=True)
class PredictabilityReport:
    """A design's predictability and imbalance, beside the usual alternatives."""

    design: str
    arms: tuple[str, ...]
    ratio: tuple[int, ...]
    participants: int
    """Planned participants per stratum (the design's ``stratum_length``)."""
    strata: int
    imbalance_bound: float
    """The design's own bound: largest block size / sum of the ratio."""
    rows: tuple[Predictability, ...]
    """The design's own blocks first, then the alternatives."""


def predictability_report(
    design: TrialDesign, seed: bytes = SIMULATION_SEED, method: Method | None = None
) -> PredictabilityReport:
    """The design's figures and those of the usual alternatives with the same ratio.

    Alternatives whose block sizes are not multiples of the ratio's sum are
    left out, and so is any that is the design's own. ``method`` forces exact or
    simulated figures (default: exact when affordable); ``seed`` seeds the
    simulations.
    """
    n = design.stratum_length
    total = sum(design.ratio)
    whole = -(-n // total) * total
    rows = [block_predictability(design, design.block_sizes, seed=seed, method=method, own=True)]
    seen = {frozenset(design.block_sizes)}
    for sizes in (*ALTERNATIVE_BLOCK_SIZES, (whole,)):
        if any(size % total for size in sizes) or frozenset(sizes) in seen:
            continue
        seen.add(frozenset(sizes))
        rows.append(block_predictability(design, sizes, seed=seed, method=method))
    return PredictabilityReport(
        design=design.id,
        arms=design.arm_ids,
        ratio=design.ratio,
        participants=n,
        strata=len(design.strata()),
        imbalance_bound=design.imbalance_bound(),
        rows=tuple(rows),
    )


def block_predictability(
    design: TrialDesign,
    block_sizes: Sequence[int],
    participants: int | None = None,
    seed: bytes = SIMULATION_SEED,
    method: Method | None = None,
    trials: int | None = None,
    own: bool = False,
) -> Predictability:
    """The figures for ``block_sizes`` with the design's ratio, per stratum of ``participants``.

    ``participants`` defaults to the design's ``stratum_length``. ``method``
    defaults to exact when :func:`exact_affordable`, else simulation;
    ``trials`` defaults to :func:`simulation_trials`.
    """
    sizes = tuple(block_sizes)
    n = design.stratum_length if participants is None else participants
    _check(design.ratio, sizes, n)
    chosen: Method = method or (
        "exact" if exact_affordable(design.ratio, sizes, n) else "simulation"
    )
    if chosen == "exact":
        share, error, simulated = exact_correct_guesses(design.ratio, sizes, n), 0.0, 0
    else:
        simulated = simulation_trials(sizes, n) if trials is None else trials
        share, error = simulated_correct_guesses(design, sizes, n, seed, simulated)
    return Predictability(
        label=block_label(sizes, n),
        block_sizes=sizes,
        participants=n,
        correct_guesses=share,
        method=chosen,
        standard_error=error,
        trials=simulated,
        largest_imbalance=largest_imbalance(design.ratio, sizes, n),
        design=own,
    )


def block_label(block_sizes: Sequence[int], participants: int) -> str:
    """``fixed blocks of 4``, ``random sizes {2, 4}``, or ``one block of 20`` (whole stratum)."""
    if len(block_sizes) == 1:
        if block_sizes[0] >= participants:
            return f"one block of {block_sizes[0]}"
        return f"fixed blocks of {block_sizes[0]}"
    return "random sizes {" + ", ".join(str(s) for s in sorted(block_sizes)) + "}"


def exact_affordable(ratio: Sequence[int], block_sizes: Sequence[int], participants: int) -> bool:
    """Whether :func:`exact_correct_guesses` stays within the work limits."""
    work = sum(_block_work(ratio, size) for size in block_sizes)
    return work <= EXACT_WORK_LIMIT and participants * len(block_sizes) <= EXACT_STEP_LIMIT


def exact_correct_guesses(
    ratio: Sequence[int], block_sizes: Sequence[int], participants: int
) -> float:
    """Expected share of right guesses over the first ``participants`` of a stratum, exactly.

    Sums, over every position where a block can start, the probability that
    one starts there times the expected right guesses in it (cut at the
    stratum's planned size), in floating point.
    """
    ratio, sizes, n = tuple(ratio), tuple(block_sizes), participants
    _check(ratio, sizes, n)
    # size -> expected right guesses in the block's first m positions, m = 0..size
    hits_before: dict[int, list[float]] = {}
    for size in sizes:
        hits = position_hits(ratio, size)
        hits_before[size] = [0.0, *np.cumsum(hits).tolist()]
    starts = [0.0] * n  # probability that a block starts at each position
    starts[0] = 1.0
    expected = 0.0
    chance = 1.0 / len(sizes)
    for start, p in enumerate(starts):
        if p == 0.0:
            continue
        for size in sizes:
            expected += p * chance * hits_before[size][min(size, n - start)]
            if start + size < n:
                starts[start + size] += p * chance
    return expected / n


def position_hits(ratio: Sequence[int], size: int) -> NDArray[np.float64]:
    """For each position of one block, the probability that the guess there is right.

    The state is how many of each arm the block has left; every arrangement
    of the block being equally likely, the next arm is ``a`` with probability
    (``a`` left) / (all left). The states are a table indexed by what is left
    of every arm but the last (the last arm's is what remains of the block),
    all advanced one position at a time.
    """
    total = sum(ratio)
    full = [share * size // total for share in ratio]
    others = len(ratio) - 1
    left_of = np.indices(tuple(count + 1 for count in full[:-1]), dtype=np.int64)
    others_left = left_of.sum(axis=0)
    chance = np.zeros(others_left.shape, dtype=np.float64)
    chance[tuple(full[:-1])] = 1.0  # cells that cannot occur keep chance 0
    hits = np.empty(size, dtype=np.float64)
    for position in range(size):
        left = size - position
        remaining = [*left_of, left - others_left]
        # shortfall below the target share, times sum(ratio) to stay in integers
        shortfall = [
            share * position - total * (count - arm_left)
            for share, count, arm_left in zip(ratio, full, remaining, strict=True)
        ]
        top = np.maximum.reduce(shortfall)
        behind = [value == top for value in shortfall]
        right = sum(mask * arm_left for mask, arm_left in zip(behind, remaining, strict=True))
        hits[position] = float((chance * right / (left * sum(behind))).sum())
        following = chance * (remaining[-1] / left)  # the last arm comes next
        for axis in range(others):
            taken = chance * (left_of[axis] / left)
            into = [slice(None)] * others
            into[axis] = slice(0, -1)
            out_of = [slice(None)] * others
            out_of[axis] = slice(1, None)
            following[tuple(into)] += taken[tuple(out_of)]
        chance = following
    return hits


def guess_hits(arm_index: NDArray[np.integer], ratio: Sequence[int]) -> NDArray[np.float64]:
    """For a stratum's arms in list order (arm numbers), the chance each guess is right.

    The guess at each position is the arm furthest below its target share
    given the arms before it; ties count ``1/k``.
    """
    shares = np.asarray(ratio, dtype=np.int64)
    total = int(shares.sum())
    arms = np.asarray(arm_index, dtype=np.int64)
    result = np.empty(arms.size, dtype=np.float64)
    given = np.zeros(shares.size, dtype=np.int64)
    for start in range(0, arms.size, _CHUNK):
        chunk = arms[start : start + _CHUNK]
        rows = np.arange(chunk.size)
        onehot = np.zeros((chunk.size, shares.size), dtype=np.int64)
        onehot[rows, chunk] = 1
        before = np.cumsum(onehot, axis=0) - onehot + given
        position = np.arange(start, start + chunk.size, dtype=np.int64)[:, None]
        shortfall = shares * position - total * before
        behind = shortfall == shortfall.max(axis=1, keepdims=True)
        result[start : start + chunk.size] = behind[rows, chunk] / behind.sum(axis=1)
        given += onehot.sum(axis=0)
    return result


def simulation_trials(block_sizes: Sequence[int], participants: int) -> int:
    """How many strata a simulation generates: as many as :data:`SIMULATION_WORK` allows.

    The generator shuffles all blocks of a stratum together, one vectorised
    step per position of its largest block, so a stratum costs about its
    largest block size in steps, plus a little per block and per slot.
    """
    low, high = SIMULATED_TRIALS
    steps = 10 + max(block_sizes) + participants // 500
    return max(low, min(high, SIMULATION_WORK // steps))


def simulated_correct_guesses(
    design: TrialDesign, block_sizes: Sequence[int], participants: int, seed: bytes, trials: int
) -> tuple[float, float]:
    """Share of right guesses and its standard error over ``trials`` generated strata.

    Each stratum is the generator's list (:func:`generate_schedule`) of an
    unstratified copy of the design with these block sizes, for a seed derived
    from ``seed`` and the trial's number; only its first ``participants`` slots
    are scored.
    """
    if trials < 2:
        raise InvalidInput(f"a simulation needs at least 2 trials, got {trials}")
    sizes = tuple(block_sizes)
    _check(design.ratio, sizes, participants)
    variant = dataclasses.replace(
        design, block_sizes=sizes, factors=(), stratum_length=participants
    )
    shares = np.empty(trials, dtype=np.float64)
    for trial in range(trials):
        list_seed = hashlib.sha256(seed + trial.to_bytes(8, "little")).digest()
        (stratum,) = generate_schedule(variant, list_seed).strata
        shares[trial] = guess_hits(stratum.arm_index[:participants], design.ratio).mean()
    return float(shares.mean()), float(shares.std(ddof=1) / math.sqrt(trials))


def largest_imbalance(ratio: Sequence[int], block_sizes: Sequence[int], participants: int) -> float:
    """The largest spread of ``count / ratio`` that can occur within the first ``participants``.

    Completed blocks are balanced, so the stratum is as unbalanced as its
    current block; the worst block is the first (any size can come first, and
    all of it lies within the stratum's planned size when it fits). In a block,
    one arm comes first as far as it can and another as late as it can.
    """
    ratio, sizes = tuple(ratio), tuple(block_sizes)
    _check(ratio, sizes, participants)
    total = sum(ratio)
    worst = 0.0
    for size in sizes:
        full = [share * size // total for share in ratio]
        for position in range(1, min(size, participants) + 1):
            for ahead, behind in _pairs(len(ratio)):
                first = min(full[ahead], position)
                others = size - full[ahead] - full[behind]
                last = max(0, position - first - others)
                worst = max(worst, first / ratio[ahead] - last / ratio[behind])
    return worst


def _pairs(arms: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(arms) for b in range(arms) if a != b]


def _block_work(ratio: Sequence[int], size: int) -> int:
    """Table cells :func:`position_hits` walks through for one block size."""
    total = sum(ratio)
    return size * math.prod(share * size // total + 1 for share in ratio[:-1])


def _check(ratio: Sequence[int], block_sizes: Sequence[int], participants: int) -> None:
    total = sum(ratio)
    if participants < 1:
        raise InvalidInput(f"participants per stratum must be at least 1, got {participants}")
    if not block_sizes:
        raise InvalidInput("at least one block size is needed")
    for size in block_sizes:
        if size < 1 or size % total:
            raise InvalidInput(
                f"block size {size} is not a positive multiple of the ratio's sum {total}"
            )
