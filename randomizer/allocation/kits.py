"""Masked kit codes: generation, the check character and forgiving parsing.

A kit code is 7 random Crockford base32 characters plus one check character,
shown as ``XXXX-XXXX`` (docs/architecture.md section 5). The codes carry no information
about the slot or the arm: they are drawn from the OS CSPRNG, and the random
source is a parameter so that tests can pin it.

The check character is the Damm scheme over GF(32): with ``m(t)`` the
multiplication of ``t`` by ``x`` modulo ``x^5 + x^2 + 1``, run
``t = 0; for v in payload: t = m(t) ^ v``; the check character is ``m(t)``, so
that a valid 8-character code runs to ``t == 0``. Because every step is linear
and ``m`` and ``m + 1`` are invertible, it catches every single substitution and
every adjacent transposition of distinct characters.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection

import numpy as np
from numpy.typing import NDArray

from randomizer.errors import KitCodeError, RandomizerError

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford base32: the character of value ``v`` is ``ALPHABET[v]``."""

PAYLOAD_LENGTH = 7
"""Random characters in a code, before the check character."""

CODE_LENGTH = PAYLOAD_LENGTH + 1
"""Characters in a code, check character included, dash excluded."""

_VALUE = {character: value for value, character in enumerate(ALPHABET)}

# Accepted spellings of each character: either case, and O for 0, I and L for 1,
# as Crockford base32 reads them. Anything else (U included) is refused.
_READ = {**_VALUE, **{c.lower(): v for c, v in _VALUE.items() if c.isalpha()}}
_READ.update({"O": 0, "o": 0, "I": 1, "i": 1, "L": 1, "l": 1})

_REDUCTION = 0b100101  # x^5 + x^2 + 1
_TIMES_X = tuple((t << 1) ^ _REDUCTION if t & 0b10000 else t << 1 for t in range(32))
_TIMES_X_TABLE = np.array(_TIMES_X, dtype=np.uint8)
_ALPHABET_BYTES = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)

# Seven random characters take five bits from each of seven bytes. 256 is a
# multiple of 32, so masking the low bits of a uniform byte is exactly uniform:
# there is no modulo bias to reject.
_MASK = 0b11111

# new_codes gives up after this many draws beyond the count asked for. With
# 32**7 (about 3.4e10) possible codes a real CSPRNG never comes close; only a
# broken or constant injected source does.
_SPARE_DRAWS = 1000
_DRAW_BATCH = 1 << 20  # codes whose random bytes are asked for at once

_SHOWN_MAX = 40


def _damm(values: list[int]) -> int:
    t = 0
    for value in values:
        t = _TIMES_X[t] ^ value
    return t


def check_character(payload: str) -> str:
    """Return the check character of ``payload``, a string of :data:`ALPHABET` characters.

    Kit codes use 7 payload characters; the scheme works for any length.
    ``check_character("1234567")`` is ``"Y"``, so ``1234-567Y`` is a valid code.
    """
    values: list[int] = []
    for character in payload:
        if character not in _VALUE:
            raise KitCodeError(
                f"kit code payload {_shown(payload)} has an invalid character "
                f"{character!r}: use only {ALPHABET}"
            )
        values.append(_VALUE[character])
    return ALPHABET[_TIMES_X[_damm(values)]]


def is_valid(code: str) -> bool:
    """Tell whether ``code`` is a well-formed kit code with a correct check character.

    Any spelling that :func:`parse_code` accepts counts (case, dashes, spaces,
    O for 0, I and L for 1).
    """
    try:
        parse_code(code)
    except KitCodeError:
        return False
    return True


def new_code(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """Draw a new random kit code, formatted ``XXXX-XXXX``.

    ``token_bytes(n)`` must return ``n`` uniformly random bytes; the default is
    the OS CSPRNG. Each of the 7 payload characters is uniform over the alphabet.
    """
    random_bytes = token_bytes(PAYLOAD_LENGTH)
    if len(random_bytes) != PAYLOAD_LENGTH:
        raise ValueError(f"token_bytes({PAYLOAD_LENGTH}) returned {len(random_bytes)} bytes")
    values = [byte & _MASK for byte in random_bytes]
    values.append(_TIMES_X[_damm(values)])
    return _format(values)


def new_codes(
    count: int,
    taken: Collection[str] = (),
    token_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> list[str]:
    """Draw ``count`` distinct new kit codes, none of them in ``taken``.

    ``taken`` holds the trial's existing codes in canonical ``XXXX-XXXX`` form.
    Codes come back in the order drawn. ``token_bytes`` is as for :func:`new_code`.
    """
    return code_texts(new_code_numbers(count, taken, token_bytes))


def new_code_numbers(
    count: int,
    taken: Collection[str] = (),
    token_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> NDArray[np.int64]:
    """:func:`new_codes` as numbers: each code's 7 random characters as one integer.

    Character values take 5 bits each, the first character the highest (35 bits in
    all); :func:`code_texts` adds the check character and writes the codes out. Eight
    bytes a code instead of a Python string (about 60), for the millions of codes of
    a large list. The random bytes are asked for in bulk, 7 per code: from a source
    that is one stream of bytes (as the OS CSPRNG is) the codes are those that drawing
    one code at a time would give, repeats and taken codes skipped alike.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, not {count}")
    unavailable = {key for key in map(_key_of_code, taken) if key >= 0}
    numbers = np.empty(count, dtype=np.int64)
    kept = 0
    drawn = 0
    while kept < count:
        batch = min(count - kept, count + _SPARE_DRAWS - drawn, _DRAW_BATCH)
        if batch <= 0:
            raise RandomizerError(
                f"could not draw {count} distinct new kit codes: the random source repeats itself"
            )
        random_bytes = token_bytes(PAYLOAD_LENGTH * batch)
        if len(random_bytes) != PAYLOAD_LENGTH * batch:
            raise ValueError(
                f"token_bytes({PAYLOAD_LENGTH * batch}) returned {len(random_bytes)} bytes"
            )
        drawn += batch
        numbers[kept : kept + batch] = _numbers(random_bytes, batch)
        kept += batch
        if kept == count or drawn == count + _SPARE_DRAWS:
            kept = _drop_repeats(numbers, kept, unavailable)
    return numbers


def code_texts(numbers: NDArray[np.int64]) -> list[str]:
    """The codes of :func:`new_code_numbers`, as ``XXXX-XXXX`` strings."""
    table = np.empty((len(numbers), CODE_LENGTH + 1), dtype=np.uint8)
    check = np.zeros(len(numbers), dtype=np.uint8)
    for position in range(PAYLOAD_LENGTH):
        value = ((numbers >> (5 * (PAYLOAD_LENGTH - 1 - position))) & _MASK).astype(np.uint8)
        check = _TIMES_X_TABLE[check] ^ value
        table[:, position if position < 4 else position + 1] = _ALPHABET_BYTES[value]
    table[:, 4] = ord("-")
    table[:, CODE_LENGTH] = _ALPHABET_BYTES[_TIMES_X_TABLE[check]]
    text = table.tobytes().decode("ascii")
    width = CODE_LENGTH + 1
    return [text[start : start + width] for start in range(0, len(text), width)]


def _numbers(random_bytes: bytes, count: int) -> NDArray[np.int64]:
    """Codes' payloads from 7 random bytes each: the low 5 bits of each byte."""
    raw = np.frombuffer(random_bytes, dtype=np.uint8).reshape(count, PAYLOAD_LENGTH)
    numbers = np.zeros(count, dtype=np.int64)
    for position in range(PAYLOAD_LENGTH):
        numbers <<= 5
        numbers |= raw[:, position] & np.uint8(_MASK)
    return numbers


def _drop_repeats(numbers: NDArray[np.int64], kept: int, unavailable: set[int]) -> int:
    """Keep the first drawing of each code among ``numbers[:kept]`` and none that is
    ``unavailable``, in order, at the front of ``numbers``; return how many remain."""
    drawn = numbers[:kept]
    ordered = np.sort(drawn)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    del ordered
    suspects = set(repeated.tolist()) | unavailable
    if not suspects:
        return kept
    listed = np.array(sorted(suspects), dtype=np.int64)
    seen: set[int] = set(unavailable)
    drop: list[int] = []
    for start in range(0, kept, _DRAW_BATCH):  # a batch at a time: small temporaries
        part = drawn[start : start + _DRAW_BATCH]
        at = np.minimum(np.searchsorted(listed, part), listed.size - 1)
        for index in np.flatnonzero(listed[at] == part).tolist():
            number = int(part[index])
            if number in seen:
                drop.append(start + index)
            seen.add(number)
    if not drop:
        return kept
    keep = np.ones(kept, dtype=bool)
    keep[drop] = False
    remaining = int(keep.sum())
    numbers[:remaining] = drawn[keep]
    return remaining


def _key_of_code(code: str) -> int:
    """The payload of a canonical code as :func:`new_code_numbers` gives it; -1 if none."""
    payload = code.replace("-", "")[:PAYLOAD_LENGTH]
    if len(payload) != PAYLOAD_LENGTH or any(c not in _VALUE for c in payload):
        return -1
    key = 0
    for character in payload:
        key = key << 5 | _VALUE[character]
    return key


def parse_code(text: str) -> str:
    """Read a kit code as a person typed it and return it as ``XXXX-XXXX``.

    Case does not matter, dashes and spaces are ignored, O reads as 0 and I or L
    as 1. A character outside the alphabet, a wrong length or a wrong check
    character raises :class:`~randomizer.errors.KitCodeError`; the last one says
    the code is probably mistyped.
    """
    values: list[int] = []
    for character in text:
        if character == "-" or character.isspace():
            continue
        value = _READ.get(character)
        if value is None:
            raise KitCodeError(
                f"kit code {_shown(text)} has an invalid character {character!r}: "
                "kit codes use the digits and the letters A-Z except U"
            )
        values.append(value)
    if not values:
        raise KitCodeError(f"kit code {_shown(text)} is empty: expected XXXX-XXXX")
    if len(values) != CODE_LENGTH:
        raise KitCodeError(
            f"kit code {_shown(text)} has {len(values)} characters, "
            f"not {CODE_LENGTH}: expected XXXX-XXXX"
        )
    code = _format(values)
    if _damm(values) != 0:
        raise KitCodeError(
            f"kit code {code} fails its check character: probably a typo; check the label"
        )
    return code


def _format(values: list[int]) -> str:
    characters = "".join(ALPHABET[value] for value in values)
    return f"{characters[:4]}-{characters[4:]}"


def _shown(text: str) -> str:
    # repr keeps the message on one line whatever the input holds
    if len(text) > _SHOWN_MAX:
        return repr(text[:_SHOWN_MAX]) + "..."
    return repr(text)
