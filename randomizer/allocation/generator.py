"""Permuted-block allocation lists: design + seed -> slots (pure, no I/O).

The algorithm is specified in docs/algorithm.md (summary: docs/architecture.md
section 4). Per stratum, block sizes are drawn from the stream
``stratum:<key>/sizes`` until the stratum holds at least its length; each block
holds the arms in design order, each repeated ``ratio[arm] * size / sum(ratio)``
times, and is shuffled by Fisher-Yates (``for i from size-1 down to 1: j =
uniform(i+1); swap i, j``) with draws from ``stratum:<key>/shuffle``.

The work is vectorised with numpy so that a list of a million slots takes a few
tens of milliseconds: all words of a stream are produced at once, and each
Fisher-Yates step is applied to every block of the stratum together. The result
is columnar (:class:`StratumSchedule`); :meth:`Schedule.slots` gives :class:`ScheduledSlot`
values for small lists. ``tests/allocation/reference.py`` is a plain one-draw-at-
a-time reading of the same spec; the tests hold the two equal bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from randomizer.allocation.stream import (
    check_seed,
    largest_accepted,
    stream_words,
    uniform_draws,
)
from randomizer.design import TrialDesign
from randomizer.errors import InvalidInput

MAX_STRATUM_LENGTH = 10_000_000
"""Largest list length per stratum (the design format's own limit)."""

DIGEST_HEADER = "stratum,sequence,block,block_size,arm\n"
"""First line of the CSV text that :meth:`Schedule.digest` hashes."""

# Block sizes are at most 1000 (design validation), and every arm has a ratio of at
# least 1, so arm indexes and block sizes fit in int16.
_ARM_DTYPE = np.int16
_CHUNK = 1 << 13  # rows per chunk of text (CSV, JSON): a chunk's table stays in the CPU cache


@dataclass(frozen=True)
class ScheduledSlot:
    """One place in the list: the ``sequence``-th slot of its stratum (from 1)."""

    stratum: str
    sequence: int
    block: int
    block_size: int
    arm: str


@dataclass(frozen=True, eq=False)
class StratumSchedule:
    """One stratum's list as read-only columns in list order.

    Element ``k`` of each column belongs to the slot with sequence ``k + 1``;
    ``arm_index`` indexes ``arm_ids``.
    """

    stratum: str
    arm_ids: tuple[str, ...]
    block: NDArray[np.int32]
    block_size: NDArray[np.int16]
    arm_index: NDArray[np.int16]

    def __post_init__(self) -> None:
        n = len(self.arm_index)
        if len(self.block) != n or len(self.block_size) != n:
            raise ValueError("block, block_size and arm_index must have the same length")
        for text in (self.stratum, *self.arm_ids):
            # The list digest writes them as CSV fields (see Schedule.digest).
            if not text or any(c in text for c in ",\r\n\0"):
                raise ValueError(
                    f"stratum keys and arm ids must be non-empty and free of "
                    f"commas, line breaks and NUL: {text!r}"
                )
        for column in (self.block, self.block_size, self.arm_index):
            column.setflags(write=False)

    def __len__(self) -> int:
        return len(self.arm_index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StratumSchedule):
            return NotImplemented
        return (
            self.stratum == other.stratum
            and self.arm_ids == other.arm_ids
            and np.array_equal(self.block, other.block)
            and np.array_equal(self.block_size, other.block_size)
            and np.array_equal(self.arm_index, other.arm_index)
        )

    @property
    def blocks(self) -> int:
        """Number of blocks."""
        return int(self.block[-1]) if len(self.block) else 0

    def arms(self) -> list[str]:
        """The arm of every slot, in list order."""
        ids = self.arm_ids
        return [ids[k] for k in self.arm_index.tolist()]

    def slots(self) -> Iterator[ScheduledSlot]:
        """The slots in list order."""
        ids = self.arm_ids
        rows = zip(
            self.block.tolist(), self.block_size.tolist(), self.arm_index.tolist(), strict=True
        )
        for sequence, (block, size, arm) in enumerate(rows, start=1):
            yield ScheduledSlot(self.stratum, sequence, block, size, ids[arm])

    def counts(self) -> dict[str, int]:
        """Slots per arm, in design order."""
        tally = np.bincount(self.arm_index, minlength=len(self.arm_ids))
        return dict(zip(self.arm_ids, (int(c) for c in tally), strict=True))


@dataclass(frozen=True)
class Schedule:
    """A whole allocation list: one :class:`StratumSchedule` per stratum, design order."""

    arm_ids: tuple[str, ...]
    strata: tuple[StratumSchedule, ...]

    def __len__(self) -> int:
        return sum(len(s) for s in self.strata)

    def stratum(self, key: str) -> StratumSchedule:
        """The list of the stratum with this canonical key."""
        for stratum in self.strata:
            if stratum.stratum == key:
                return stratum
        raise KeyError(key)

    def slots(self) -> Iterator[ScheduledSlot]:
        """Every slot: strata in design order, then slots in list order."""
        for stratum in self.strata:
            yield from stratum.slots()

    def counts(self) -> dict[str, dict[str, int]]:
        """Slots per arm (design order) for each stratum (design order)."""
        return {s.stratum: s.counts() for s in self.strata}

    def digest(self) -> str:
        """SHA-256 (hex) of the list as CSV text (:meth:`csv_chunks`), see docs/algorithm.md.

        The text is the line ``stratum,sequence,block,block_size,arm`` and then one
        line per slot in :meth:`slots` order, integers in plain decimal, fields
        separated by ``,``, every line ended by ``\\n``, encoded in UTF-8.
        """
        sha = hashlib.sha256()
        for chunk in self.csv_chunks():
            sha.update(chunk)
        return sha.hexdigest()

    def csv_chunks(self) -> Iterator[bytes]:
        """The list as the CSV text that :meth:`digest` hashes, a few thousand rows at a time.

        Stratum keys and arm ids hold no comma, quote or line break (checked by
        :class:`StratumSchedule`), so no field needs quoting.
        """
        yield DIGEST_HEADER.encode("utf-8")
        for stratum in self.strata:
            yield from _text_rows(stratum, _csv_layout(stratum))

    def json_slot_chunks(self) -> Iterator[bytes]:
        """The slots as the items of a JSON array, as ``json.dumps(indent=2)`` lays them out.

        Each slot is an object with ``stratum``, ``sequence``, ``block``, ``block_size``
        and ``arm``, in an array under a top-level key: ``'{\\n  "slots": ['``, the
        chunks, then ``'\\n  ]\\n}'`` is byte for byte ``json.dumps({"slots": [...]},
        indent=2, ensure_ascii=False)`` in UTF-8. The list is never held as Python
        objects: a few thousand slots at a time. The first item starts with ``"\\n"``,
        every later one with ``",\\n"``.
        """
        first = True
        for stratum in self.strata:
            for chunk in _text_rows(stratum, _json_layout(stratum)):
                yield chunk[1:] if first else chunk  # no comma before the first item
                first = False


def generate_schedule(
    design: TrialDesign, seed: bytes, stratum_length: int | None = None
) -> Schedule:
    """The allocation list of ``design`` for ``seed`` (32 bytes).

    Every stratum gets whole blocks until it holds at least ``stratum_length``
    slots (default: the design's ``stratum_length``), so a list may run a few
    slots past it.
    """
    check_seed(seed)
    length = design.stratum_length if stratum_length is None else stratum_length
    if isinstance(length, bool) or not isinstance(length, int):
        raise InvalidInput(f"participants per stratum must be an integer, got {length!r}")
    if not 1 <= length <= MAX_STRATUM_LENGTH:
        raise InvalidInput(
            f"participants per stratum must be between 1 and {MAX_STRATUM_LENGTH}, got {length}"
        )
    if length * len(design.strata()) > MAX_STRATUM_LENGTH:
        raise InvalidInput(
            f"{length} participants per stratum x {len(design.strata())} strata "
            f"is more than {MAX_STRATUM_LENGTH} slots"
        )
    plan = _plan(design.arm_ids, design.ratio, design.block_sizes)
    strata = tuple(plan.stratum(seed, key, length) for key in design.strata())
    return Schedule(arm_ids=design.arm_ids, strata=strata)


@functools.lru_cache(maxsize=32)
def _plan(arm_ids: tuple[str, ...], ratio: tuple[int, ...], block_sizes: tuple[int, ...]) -> _Plan:
    return _Plan(arm_ids, ratio, block_sizes)


class _Plan:
    """What every stratum shares: size choices, unshuffled blocks, rejection bounds."""

    def __init__(
        self, arm_ids: tuple[str, ...], ratio: tuple[int, ...], block_sizes: tuple[int, ...]
    ) -> None:
        self.arm_ids = arm_ids
        self.size_options = np.array(block_sizes, dtype=np.int64)
        self.size_options.setflags(write=False)
        total = sum(ratio)
        arms = np.arange(len(ratio), dtype=_ARM_DTYPE)
        # The unshuffled block of each size: arms in design order, ratio-many each.
        self.unshuffled = {
            size: np.repeat(arms, [share * size // total for share in ratio])
            for size in block_sizes
        }
        for block in self.unshuffled.values():
            block.setflags(write=False)  # plans are cached and shared
        choices = np.array([len(block_sizes)], dtype=np.uint64)
        self.size_choice_top = largest_accepted(choices)[0]
        # Fisher-Yates draws uniform(n) for n = 2..largest size. If no shuffle word
        # exceeds the smallest of their acceptance bounds, no draw is rejected and
        # the word itself can stand in for the draw (draw = word % n).
        moduli = np.arange(2, max(block_sizes) + 1, dtype=np.uint64)
        self.shuffle_top = largest_accepted(moduli).min() if moduli.size else np.uint64(0)
        self.size_mean = float(self.size_options.mean())
        self.size_sd = float(self.size_options.std())

    def stratum(self, seed: bytes, key: str, length: int) -> StratumSchedule:
        label = f"stratum:{key}"
        sizes = self.block_sizes(seed, f"{label}/sizes", length)
        draws = self.shuffle_draws(seed, f"{label}/shuffle", sizes)
        arm_index = self.shuffle(sizes, draws)
        # Block numbers: a 1 at each block's first slot, summed along the list.
        block = np.zeros(arm_index.size, dtype=np.int32)
        block[np.cumsum(sizes[:-1])] = 1
        block[0] = 1
        np.cumsum(block, out=block)
        return StratumSchedule(
            stratum=key,
            arm_ids=self.arm_ids,
            block=block,
            block_size=np.repeat(sizes.astype(np.int16), sizes),
            arm_index=arm_index,
        )

    def block_sizes(self, seed: bytes, label: str, length: int) -> NDArray[np.int64]:
        """Sizes of the stratum's blocks, in order, until they hold ``length`` slots."""
        options = self.size_options
        if options.size == 1:
            # uniform(1) is always 0: the words are consumed but decide nothing.
            return np.full(-(-length // int(options[0])), options[0], dtype=np.int64)
        # Enough words for all but a vanishing share of seeds (6 standard deviations
        # above the expected number of blocks); fetch more when a seed needs them.
        expected = length / self.size_mean
        count = int(expected + 6 * self.size_sd / self.size_mean * math.sqrt(expected)) + 8
        while True:
            words = stream_words(seed, label, count)
            # Rejected words are skipped: with one modulus, the accepted words in
            # order are exactly the words the successive draws return.
            if words.max() > self.size_choice_top:
                words = words[words <= self.size_choice_top]
            chosen: NDArray[np.int64] = options[words % np.uint64(options.size)]
            ends = np.cumsum(chosen)
            if ends.size and ends[-1] >= length:
                blocks = int(np.searchsorted(ends, length)) + 1
                return chosen[:blocks]
            count *= 2

    def shuffle_draws(
        self, seed: bytes, label: str, sizes: NDArray[np.int64]
    ) -> NDArray[np.uint64]:
        """Values ``v`` whose ``v % n`` are the Fisher-Yates draws, block after block."""
        count = int(sizes.sum()) - sizes.size  # a block of size s takes s - 1 draws
        words = stream_words(seed, label, count)
        if count == 0 or words.max() <= self.shuffle_top:
            return words
        # Some word may be rejected (odds below size / 2**64 per word: under 1 in
        # 10**12 for a million slots in blocks up to 6). Redo the draws exactly,
        # each with its own modulus.
        per_block = sizes - 1
        first = np.cumsum(per_block) - per_block
        steps = np.arange(count, dtype=np.int64) - np.repeat(first, per_block)
        moduli = (np.repeat(sizes, per_block) - steps).astype(np.uint64)
        draws, _ = uniform_draws(seed, label, moduli)
        return draws

    def shuffle(self, sizes: NDArray[np.int64], draws: NDArray[np.uint64]) -> NDArray[np.int16]:
        """The arms of every slot: each block filled and shuffled, blocks in order.

        Fisher-Yates is sequential within a block but independent across blocks, so
        step ``c`` (``i = size - 1 - c``) is done for every block at once. Blocks are
        the columns of a (largest size x blocks) table, largest blocks first and each
        block in its bottom rows: step ``c`` then swaps out of one row, the same for
        every block, and the blocks still shuffling are a leading run of columns.
        """
        largest = int(sizes.max())
        blocks = sizes.size
        first_slot = np.cumsum(sizes) - sizes
        first_draw = first_slot - np.arange(blocks)
        groups = [
            (size, np.flatnonzero(sizes == size)) for size in sorted(self.unshuffled, reverse=True)
        ]
        order = np.concatenate([which for _, which in groups])
        ordered_sizes = sizes[order]
        top_row = largest - ordered_sizes  # each block's first row in the table

        def run(min_size: int) -> int:
            """How many leading (ordered) blocks have at least ``min_size`` slots."""
            return sum(which.size for size, which in groups if size >= min_size)

        # cells[row * blocks + column]; cells above a short block are never read.
        cells = np.empty(largest * blocks, dtype=_ARM_DTYPE)
        start = 0
        for size, which in groups:
            stop = start + which.size
            for position, arm in enumerate(self.unshuffled[size].tolist()):
                row = largest - size + position
                cells[row * blocks + start : row * blocks + stop] = arm
            start = stop

        block_draw = first_draw[order]
        cell_of_top = top_row * blocks + np.arange(blocks)
        for c in range(largest - 1):
            active = run(c + 2)  # a block of size s takes s - 1 steps
            row = largest - 1 - c  # position i = size - 1 - c of every active block
            moduli = (ordered_sizes[:active] - c).astype(np.uint64)  # i + 1
            j = (draws[block_draw[:active] + c] % moduli).astype(np.int64)
            at_j = cell_of_top[:active] + j * blocks
            at_i = slice(row * blocks, row * blocks + active)
            held = cells[at_j]
            cells[at_j] = cells[at_i]
            cells[at_i] = held

        arm_index = np.empty(int(sizes.sum()), dtype=_ARM_DTYPE)
        slot_of_top = first_slot[order] - top_row  # row r of a block is its slot top + r
        for row in range(largest):
            present = run(largest - row)
            arm_index[slot_of_top[:present] + row] = cells[row * blocks : row * blocks + present]
        return arm_index


@dataclass(frozen=True)
class _Layout:
    """A row of text: ``before``, the sequence, ``after_sequence``, the block,
    ``after_block``, the block size, ``after_size``, then the arm's text (``arms``)."""

    before: str
    after_sequence: str
    after_block: str
    after_size: str
    arms: tuple[str, ...]


def _csv_layout(stratum: StratumSchedule) -> _Layout:
    return _Layout(
        f"{stratum.stratum},", ",", ",", ",", tuple(f"{arm}\n" for arm in stratum.arm_ids)
    )


def _json_layout(stratum: StratumSchedule) -> _Layout:
    def string(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    return _Layout(
        f',\n    {{\n      "stratum": {string(stratum.stratum)},\n      "sequence": ',
        ',\n      "block": ',
        ',\n      "block_size": ',
        ',\n      "arm": ',
        tuple(f"{string(arm)}\n    }}" for arm in stratum.arm_ids),
    )


def _text_rows(stratum: StratumSchedule, layout: _Layout) -> Iterator[bytes]:
    """One stratum's slots as rows of text laid out by ``layout``, in chunks of rows.

    Each chunk is a byte table, one row per slot and one field after the other at
    fixed columns; the constant text is written once per table shape. Sequence and
    block numbers keep one width within a chunk (a chunk ends where either gains a
    digit), so only block sizes and arms of different lengths leave NUL padding in a
    row (which no field holds: JSON escapes a NUL in a string), dropped at the end.
    """
    n = len(stratum)
    if n == 0:
        return
    ends = {min(start + _CHUNK, n) for start in range(0, n, _CHUNK)}
    powers = [10**k for k in range(1, len(str(n)))]
    ends.update(power - 1 for power in powers)  # the sequence gains a digit at slot `power`
    # the block number gains one at the first slot of block `power` (powers in the block
    # column's own type: a Python int would have numpy convert the whole column first)
    ends.update(stratum.block.searchsorted(np.array(powers, dtype=stratum.block.dtype)).tolist())
    size_width = len(str(int(stratum.block_size.max())))
    arms = [text.encode("utf-8") for text in layout.arms]
    arm_table = np.zeros((len(arms), max(len(a) for a in arms)), dtype=np.uint8)
    for k, encoded in enumerate(arms):
        arm_table[k, : len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    sizes_padded = int(stratum.block_size.min()) < 10 ** (size_width - 1)
    padded = sizes_padded or len({len(a) for a in arms}) > 1
    tables: dict[tuple[int, int], tuple[NDArray[np.uint8], list[int]]] = {}
    start = 0
    for stop in sorted(e for e in ends if 0 < e <= n):
        if stop == start:
            continue
        widths = (len(str(stop)), len(str(int(stratum.block[stop - 1]))))
        if widths not in tables or len(tables[widths][0]) < stop - start:
            # as long as this run needs: the 9 one-digit sequences need only 9 rows
            tables[widths] = _row_table(
                layout,
                (*widths, size_width, arm_table.shape[1]),
                _CHUNK if stop - start > 9 else stop - start,
            )
        table, columns = tables[widths]
        rows = table[: stop - start]
        _digits(rows, columns[0], widths[0], np.arange(start + 1, stop + 1, dtype=np.uint32))
        _digits(rows, columns[1], widths[1], stratum.block[start:stop].astype(np.uint32))
        _digits(
            rows,
            columns[2],
            size_width,
            stratum.block_size[start:stop].astype(np.uint32),
            pad=sizes_padded,
        )
        rows[:, columns[3] : columns[3] + arm_table.shape[1]] = arm_table[
            stratum.arm_index[start:stop]
        ]
        text = rows.tobytes()
        yield text.replace(b"\0", b"") if padded else text
        start = stop


def _row_table(
    layout: _Layout, widths: tuple[int, int, int, int], rows: int
) -> tuple[NDArray[np.uint8], list[int]]:
    """A table of ``rows`` rows holding ``layout``'s constant text, and the first
    column of each of its four variable fields (of ``widths``)."""
    texts = [layout.before, layout.after_sequence, layout.after_block, layout.after_size]
    encoded = [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]
    table = np.zeros((rows, sum(e.size for e in encoded) + sum(widths)), dtype=np.uint8)
    columns: list[int] = []
    column = 0
    for constant, width in zip(encoded, widths, strict=True):
        table[0, column : column + constant.size] = constant
        column += constant.size
        columns.append(column)
        column += width
    filled = 1
    while filled < rows:  # copy the first row down in doubling blocks: contiguous copies
        more = min(filled, rows - filled)
        table[filled : filled + more] = table[:more]
        filled += more
    return table, columns


def _digits(
    table: NDArray[np.uint8], column: int, width: int, values: NDArray[np.uint32], pad: bool = False
) -> None:
    """Write positive ``values`` as ASCII digits in ``width`` columns from ``column``.

    Every value has ``width`` digits, or with ``pad`` at most that many, right-aligned
    with NUL bytes on the left.
    """
    rest = values
    for at in range(column + width - 1, column - 1, -1):
        higher = rest // np.uint32(10)
        digit = (rest - higher * np.uint32(10)).astype(np.uint8) + np.uint8(ord("0"))
        table[:, at] = np.where(rest > 0, digit, np.uint8(0)) if pad else digit
        rest = higher
