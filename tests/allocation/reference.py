"""A deliberately simple, pure-Python reading of docs/algorithm.md.

Used only by the tests and the benchmark, to check the vectorised generator bit
for bit. It shares no code with ``randomizer.allocation``: it re-derives the
stream, the draws, the blocks, the shuffle and the list digest from the spec,
one value at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from randomizer.design import TrialDesign

RefSlot = tuple[str, int, int, int, str]
"""(stratum, sequence, block, block_size, arm)"""

WordSource = Callable[[bytes, str], Iterator[int]]


def shake_words(seed: bytes, label: str) -> Iterator[int]:
    """The words of stream(seed, label), one at a time, for ever."""
    message = b"randomizer/v1\0" + seed + b"\0" + label.encode("utf-8")
    size = 1024
    position = 0
    while True:
        output = hashlib.shake_256(message).digest(size)
        while position + 8 <= size:
            yield int.from_bytes(output[position : position + 8], "little")
            position += 8
        size *= 2


class Stream:
    """uniform(n) by rejection, exactly as the spec words it."""

    def __init__(self, words: Iterator[int]) -> None:
        self.words = words

    def uniform(self, n: int) -> int:
        while True:
            w = next(self.words)
            if w >= 2**64 - (2**64 % n):
                continue
            return w % n


def generate(
    design: TrialDesign, seed: bytes, length: int | None = None, words: WordSource = shake_words
) -> list[RefSlot]:
    """The whole list, stratum by stratum in design order, slots in list order."""
    if length is None:
        length = design.stratum_length
    total = sum(design.ratio)
    slots: list[RefSlot] = []
    for stratum in design.strata():
        sizes = Stream(words(seed, f"stratum:{stratum}/sizes"))
        shuffle = Stream(words(seed, f"stratum:{stratum}/shuffle"))
        sequence = 0
        block = 0
        while sequence < length:
            block += 1
            size = design.block_sizes[sizes.uniform(len(design.block_sizes))]
            contents: list[str] = []
            for arm, share in zip(design.arm_ids, design.ratio, strict=True):
                contents += [arm] * (share * size // total)
            for i in range(size - 1, 0, -1):
                j = shuffle.uniform(i + 1)
                contents[i], contents[j] = contents[j], contents[i]
            for arm in contents:
                sequence += 1
                slots.append((stratum, sequence, block, size, arm))
    return slots


def digest(slots: list[RefSlot]) -> str:
    """SHA-256 of the list as CSV text (docs/algorithm.md, "List digest")."""
    text = "stratum,sequence,block,block_size,arm\n"
    text += "".join(f"{s},{q},{b},{z},{a}\n" for s, q, b, z, a in slots)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
