"""Electronic signatures with meaning (21 CFR Part 11 style): what each signed action means.

Randomizing, breaking the blind for one participant, locking the database,
approving the allocation list, the final unblinding and voiding a randomization
are signed: the user re-enters their password at the moment of signing, even
when they hold a login token, and the record keeps the printed name, the date
and time (UTC) and the meaning of the signature. The meanings are fixed here,
in one place; a front end shows the meaning and sends it back with the
password, and a signature whose meaning is not the action's own is refused.
The password check itself is :func:`randomizer.logins.sign`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MEANINGS: dict[str, str] = {
    "randomize": "I confirm that this participant meets every eligibility criterion "
    "and may be randomized.",
    "unblind.emergency": "I confirm that this participant's medical care requires "
    "knowing their treatment now.",
    "lock": "I confirm that the trial's data are complete and the database may be locked.",
    "list.approve": "I have reviewed the blinded QC summary of this allocation list and "
    "approve it for go-live.",
    "unblind.all": "I confirm that the database is locked and the whole trial may be "
    "unblinded for the final analysis.",
    "participant.void": "I confirm that this randomization was made in error.",
}
"""The meaning of each signed action's signature, by its audit action."""


@dataclass(frozen=True)
class Signature:
    """What a signer gives at the moment of signing: their password and the meaning shown."""

    password: str
    meaning: str

    def __repr__(self) -> str:
        """Never the password (tracebacks, logs)."""
        return f"Signature(meaning={self.meaning!r})"


@dataclass(frozen=True)
class SignedBy:
    """A signature as recorded: who (printed name), when (UTC text), what it means, for what."""

    name: str
    at: str
    meaning: str
    action: str

    def record(self) -> dict[str, Any]:
        """The ``signature`` entry of the action's audit details."""
        return {"name": self.name, "at": self.at, "meaning": self.meaning}


def meaning_of(action: str) -> str:
    """The fixed meaning of a signed action's signature."""
    return MEANINGS[action]


def is_signed(action: str) -> bool:
    """Whether ``action`` needs an electronic signature."""
    return action in MEANINGS
