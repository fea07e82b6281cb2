"""The seeded random stream of docs/algorithm.md (docs/architecture.md section 4).

A stream is the SHAKE-256 output of ``b"randomizer/v1\\0" + seed + b"\\0" + label``
(label in UTF-8), read as consecutive little-endian unsigned 64-bit words. The
bytes come from a standard hash, so a list can be reproduced years later, on any
platform and numpy version, and by an independent implementation; numpy only does
vectorised arithmetic on them.

``uniform(n)`` takes the next word ``w``; if ``w >= 2**64 - (2**64 % n)`` it
discards it and takes the next; it returns ``w % n``. Every draw consumes at least
one word, also ``uniform(1)``.

Two interfaces: :class:`WordStream` draws one value at a time (simple, for small
jobs and checks); :func:`stream_words` and :func:`uniform_draws` produce many at
once as numpy arrays.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from numpy.typing import NDArray

from randomizer.errors import InvalidInput

DOMAIN = b"randomizer/v1\0"
"""Prefix of every stream's hash input: names the algorithm and its version."""

SEED_BYTES = 32
"""Length of a seed in bytes (written as 64 hexadecimal digits)."""

WORD_BYTES = 8

_TWO_64 = 1 << 64
_SEED_HEX = re.compile(r"[0-9A-Fa-f]{64}")
_LITTLE_U64 = np.dtype("<u8")


def parse_seed(text: str) -> bytes:
    """The 32-byte seed written as ``text``: exactly 64 hexadecimal digits, either case."""
    if not _SEED_HEX.fullmatch(text):
        raise InvalidInput(f"seed must be 64 hexadecimal digits, got {_describe(text)}")
    return bytes.fromhex(text)


def format_seed(seed: bytes) -> str:
    """A seed as 64 lowercase hexadecimal digits."""
    check_seed(seed)
    return seed.hex()


def check_seed(seed: bytes) -> None:
    """Raise :class:`InvalidInput` unless ``seed`` is exactly 32 bytes."""
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
        size = len(seed) if isinstance(seed, bytes | bytearray) else type(seed).__name__
        raise InvalidInput(f"seed must be {SEED_BYTES} bytes (64 hexadecimal digits), got {size}")


def _describe(text: str) -> str:
    if len(text) != 64:
        return f"{len(text)} characters"
    bad = next(c for c in text if c not in "0123456789abcdefABCDEF")
    return f"the character {bad!r}"


def stream_input(seed: bytes, label: str) -> bytes:
    """The bytes hashed for the stream ``label`` of ``seed``."""
    check_seed(seed)
    return DOMAIN + bytes(seed) + b"\0" + label.encode("utf-8")


def stream_bytes(seed: bytes, label: str, nbytes: int) -> bytes:
    """The first ``nbytes`` bytes of the stream."""
    return hashlib.shake_256(stream_input(seed, label)).digest(nbytes)


def stream_words(seed: bytes, label: str, count: int) -> NDArray[np.uint64]:
    """The first ``count`` words of the stream (read-only array)."""
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    raw = stream_bytes(seed, label, count * WORD_BYTES)
    # Little-endian by definition; astype is a no-op (no copy) on little-endian hosts.
    return np.frombuffer(raw, dtype=_LITTLE_U64).astype(np.uint64, copy=False)


def rejection_limit(n: int) -> int:
    """Smallest word rejected by ``uniform(n)``: ``2**64 - (2**64 % n)``; 2**64 if none."""
    if n < 1:
        raise ValueError(f"uniform(n) needs n >= 1, got {n}")
    return _TWO_64 - _TWO_64 % n


def largest_accepted(moduli: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Per modulus ``n``, the largest word ``uniform(n)`` accepts (``2**64 - 1 - 2**64 % n``)."""
    n = np.asarray(moduli, dtype=np.uint64)
    if n.size and n.min() < 1:
        raise ValueError("uniform(n) needs n >= 1")
    all_ones = np.uint64(_TWO_64 - 1)
    # 2**64 % n computed in uint64: ((2**64 - 1) % n + 1) % n
    return all_ones - (all_ones % n + np.uint64(1)) % n


def uniform_draws(
    seed: bytes, label: str, moduli: NDArray[np.uint64]
) -> tuple[NDArray[np.uint64], int]:
    """Draws ``uniform(moduli[0]), uniform(moduli[1]), ...`` from the start of a stream.

    Returns the draws and the number of words they consumed. Exact: a rejected word
    shifts every later draw by one word, as the sequential definition says.
    """
    n = np.asarray(moduli, dtype=np.uint64)
    count = int(n.size)
    top = largest_accepted(n)
    words = stream_words(seed, label, count)
    draws = np.empty(count, dtype=np.uint64)
    done = 0  # draws settled so far
    skipped = 0  # rejected words so far
    while done < count:
        if words.size < count + skipped:
            words = stream_words(seed, label, 2 * (count + skipped))
        window = words[done + skipped : count + skipped]
        rejected = np.flatnonzero(window > top[done:])
        stop = count - done if rejected.size == 0 else int(rejected[0])
        draws[done : done + stop] = window[:stop] % n[done : done + stop]
        done += stop
        if rejected.size:
            skipped += 1
    return draws, count + skipped


class WordStream:
    """One stream, read sequentially: ``next_word()`` and ``uniform(n)``."""

    def __init__(self, seed: bytes, label: str) -> None:
        self.label = label
        self._hash_input = stream_input(seed, label)
        self._buffer = b""
        self._position = 0  # words consumed

    @property
    def position(self) -> int:
        """Number of words consumed so far."""
        return self._position

    def next_word(self) -> int:
        """The next word, as an int in [0, 2**64)."""
        start = self._position * WORD_BYTES
        if start + WORD_BYTES > len(self._buffer):
            # SHAKE output is a prefix-stable stream: a longer digest extends a shorter one.
            size = max(64 * WORD_BYTES, 2 * len(self._buffer))
            self._buffer = hashlib.shake_256(self._hash_input).digest(size)
        self._position += 1
        return int.from_bytes(self._buffer[start : start + WORD_BYTES], "little")

    def uniform(self, n: int) -> int:
        """A uniform integer in [0, n), by rejection; consumes at least one word."""
        limit = rejection_limit(n)
        while True:
            word = self.next_word()
            if word < limit:
                return word % n
