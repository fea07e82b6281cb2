"""The one home of sealed values: their kinds, widths and row names, and the lookups that open them.

:mod:`randomizer.vault` seals and opens bytes; this module says *what* is
sealed. Three kinds of blinded value exist, each padded to one width so a
sealed value's length says nothing about it:

- ``slot.allocation``: a slot's ``arm;block;block size`` (block boundaries are
  sealed with the arm: plain ones would let whoever copies the database
  predict the last arms of a block once some arms are known);
- ``kit.content``: the arm a kit holds;
- ``trial.seed``: the list's secret seed, as 64 hexadecimal digits.

The associated data names the trial, the kind and the row (a slot by stratum
and sequence, a kit by code, the seed by trial id), so a ciphertext moved to
another row fails to open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

from sqlalchemy import BindParameter, ColumnElement, func, select

from randomizer.errors import NotFound, StateError
from randomizer.models import Participant, Slot, Stratum

if TYPE_CHECKING:  # the vault imports the widths from here
    from randomizer.context import Operation
    from randomizer.vault import Vault

SLOT_KIND = "slot.allocation"
KIT_KIND = "kit.content"
SEED_KIND = "trial.seed"

SEALED_WIDTHS: Mapping[str, int] = MappingProxyType(
    {
        SLOT_KIND: 64,
        KIT_KIND: 32,
        SEED_KIND: 64,
    }
)
"""Kinds of sealed value and the UTF-8 bytes each may hold.

Arm ids are at most 32 characters; a slot's allocation is ``arm;block;block size``
(at most 32 + 1 + 20 + 1 + 4 bytes, in 64); a seed is 64 hexadecimal digits. A new
kind of blinded value gets an entry here; there is no fallback width, so a
misspelt kind fails loudly.
"""


def slot_row(stratum: str, sequence: int) -> str:
    """The associated-data row name of a slot's sealed allocation."""
    return f"{stratum}#{sequence}"


def kit_row(code: str) -> str:
    """The associated-data row name of a kit's sealed content."""
    return code


def seal_allocation(
    vault: Vault, stratum: str, sequence: int, arm: str, block: int, block_size: int
) -> bytes:
    """Seal a slot's arm, block and block size together (one fixed width)."""
    return vault.seal(SLOT_KIND, slot_row(stratum, sequence), f"{arm};{block};{block_size}")


def open_allocation(
    vault: Vault, stratum: str, sequence: int, sealed: bytes
) -> tuple[str, int, int]:
    """The (arm, block, block size) of a sealed slot."""
    arm, block, size = vault.open(SLOT_KIND, slot_row(stratum, sequence), sealed).split(";")
    return arm, int(block), int(size)


def seal_allocations(
    vault: Vault,
    stratum: str,
    first: int,
    arms: Sequence[str],
    blocks: Sequence[int],
    block_sizes: Sequence[int],
) -> list[bytes]:
    """Seal consecutive slots of one stratum, from sequence ``first`` on (list generation)."""
    rows = [slot_row(stratum, first + k) for k in range(len(arms))]
    values = [
        f"{arm};{block};{size}" for arm, block, size in zip(arms, blocks, block_sizes, strict=True)
    ]
    return vault.seal_many(SLOT_KIND, rows, values)


def seal_kit_contents(vault: Vault, codes: Sequence[str], arms: Sequence[str]) -> list[bytes]:
    """Seal the arm each kit of ``codes`` holds (list generation)."""
    return vault.seal_many(KIT_KIND, [kit_row(code) for code in codes], arms)


def open_allocation_arms(
    vault: Vault, slots: Sequence[tuple[str, int]], sealed: Sequence[bytes]
) -> list[str]:
    """The arm of each sealed slot, given as (stratum, sequence) (exports of whole lists)."""
    rows = [slot_row(stratum, sequence) for stratum, sequence in slots]
    return [value.split(";", 1)[0] for value in vault.open_many(SLOT_KIND, rows, sealed)]


def open_allocations(
    vault: Vault, slots: Sequence[tuple[str, int]], sealed: Sequence[bytes]
) -> list[tuple[str, int, int]]:
    """The (arm, block, block size) of each sealed slot, given as (stratum, sequence):
    :func:`open_allocation` for whole lists (verify)."""
    rows = [slot_row(stratum, sequence) for stratum, sequence in slots]
    opened = []
    for value in vault.open_many(SLOT_KIND, rows, sealed):
        arm, block, size = value.split(";")
        opened.append((arm, int(block), int(size)))
    return opened


def open_kit_contents(vault: Vault, codes: Sequence[str], sealed: Sequence[bytes]) -> list[str]:
    """The arm id each kit of ``codes`` holds: :func:`open_kit_content` for whole lists."""
    return vault.open_many(KIT_KIND, [kit_row(code) for code in codes], sealed)


def seal_kit_content(vault: Vault, code: str, arm: str) -> bytes:
    """Seal the arm a kit holds."""
    return vault.seal(KIT_KIND, kit_row(code), arm)


def open_kit_content(vault: Vault, code: str, sealed: bytes) -> str:
    """The arm id a kit holds."""
    return vault.open(KIT_KIND, kit_row(code), sealed)


def seal_seed(vault: Vault, seed_hex: str) -> bytes:
    """Seal the list's seed (64 hexadecimal digits)."""
    return vault.seal(SEED_KIND, vault.trial_id, seed_hex)


def open_seed_text(vault: Vault, sealed: bytes) -> str:
    """The list's seed as 64 hexadecimal digits."""
    return vault.open(SEED_KIND, vault.trial_id, sealed)


def participant_named(code: str | BindParameter[str]) -> ColumnElement[bool]:
    """The condition "this row is participant ``code``" (an id normalised by the caller).

    Compared in upper case, so an id stored in lower case before ids were
    normalised is still found, and still counts as randomized.
    """
    return func.upper(Participant.code) == code


def find_participant(op: Operation, code: str, *conditions: ColumnElement[bool]) -> Participant:
    """The randomized participant ``code`` (an id already checked by the caller).

    ``conditions`` narrow the search (the acting user's sites): a participant
    outside them is not found, with the same refusal as one that does not exist.
    """
    found = list(
        op.session.scalars(select(Participant).where(participant_named(code), *conditions).limit(2))
    )
    if not found:
        raise NotFound(f"participant {code} is not randomized in this trial")
    if len(found) > 1:
        raise StateError(
            f"participant {code} is randomized more than once (under ids that "
            "differ only in case): ask the admin to review the trial's records"
        )
    return found[0]


def participant_arm(op: Operation, participant: Participant) -> str:
    """The arm id of a participant's slot (unblinding paths only, after their audit event)."""
    row = op.session.execute(
        select(Stratum.key, Slot.sequence, Slot.allocation_sealed)
        .join(Slot, Slot.stratum_id == Stratum.id)
        .where(Slot.id == participant.slot_id)
    ).one_or_none()
    if row is None:
        raise StateError("the participant's slot is missing: the database is damaged")
    return open_allocation(op.vault, row.key, row.sequence, row.allocation_sealed)[0]
