"""The library's results and the login a command acts as: plain frozen dataclasses.

Each is defined here, in a module that imports nothing but the standard library, so that
the remote client (:mod:`randomizer.backends.http`) and the commands it serves can build
them from the server's JSON without loading SQLAlchemy, alembic or numpy. The modules that
produce them re-export each under its old name (``randomizer.audit.AuditEvent``,
``randomizer.allocation.service.Randomization``...), which is where callers import them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LEGACY_FILE = "unblinding.csv"
"""The name of the first export's file among :attr:`Export.files`' companions."""


@dataclass(frozen=True)
class Credentials:
    """Who claims to act: a user name and a password."""

    user: str
    password: str


@dataclass(frozen=True)
class AuditEvent:
    """One audit event as shown to a reader."""

    seq: int
    at: str
    user: str
    role: str
    action: str
    subject: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    mac: str = ""


@dataclass(frozen=True)
class ChainReport:
    """The result of a successful verification."""

    events: int
    head_seq: int
    head_mac: str
    checkpoint_seq: int | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the trail held ``head_mac`` at ``seq``."""

    trial: str
    seq: int
    head_mac: str
    at: str


@dataclass(frozen=True)
class TableReport:
    """One covered table: how many rows it holds and how many problems name it."""

    table: str
    rows: int
    problems: int


@dataclass(frozen=True)
class IntegrityReport:
    """The result of ``randomizer verify``: ``ok`` only if ``problems`` is empty."""

    ok: bool
    events: int
    rows: int
    tables: tuple[TableReport, ...]
    list: str
    """``match``, ``mismatch``, ``none`` (no list generated yet) or ``not checked`` (rows
    of the list, or the trial row that holds its seed, are broken)."""
    checkpoint_seq: int | None
    problems: tuple[str, ...]


@dataclass(frozen=True)
class UserInfo:
    """A user as listed to an admin (never the hash)."""

    name: str
    role: str
    disabled: bool
    created_at: str
    sites: tuple[str, ...] = ()
    """The sites the user is limited to; empty when trial-wide."""


@dataclass(frozen=True)
class StratumSummary:
    """Planned and generated slots of one stratum."""

    stratum: str
    planned: int
    generated: int


@dataclass(frozen=True)
class ListSummary:
    """What list generation or verification may show: counts and the list commitment."""

    strata: tuple[StratumSummary, ...]
    kits: int
    spare_kits: int
    commitment: str


@dataclass(frozen=True)
class ListApproval:
    """A list's go-live approval and the blinded QC summary it was given on."""

    strata: tuple[StratumSummary, ...]
    kits: int
    spare_kits: int
    commitment: str
    generated_by: str | None
    approved_by: str
    approved_at: str


@dataclass(frozen=True)
class StratumStatus:
    """How far one stratum of the list has been used (no arm)."""

    stratum: str
    planned: int
    generated: int
    used: int


@dataclass(frozen=True)
class ListStatus:
    """Where the allocation list stands, as every role may see it: counts, never arms."""

    generated: bool
    generated_at: str | None
    commitment: str | None
    locked: bool
    strata: tuple[StratumStatus, ...]
    kits: dict[str, int]
    spare_kits: int
    spare_kits_left: int
    state: str = "none"
    """``none`` (no list), ``draft`` (awaiting approval) or ``approved``."""
    generated_by: str | None = None
    approved_by: str | None = None
    approved_at: str | None = None


@dataclass(frozen=True)
class Randomization:
    """What an investigator learns on randomizing: a number and the visit-1 kit code."""

    participant: str
    randomization_number: str
    site: str
    visit: int
    kit: str


@dataclass(frozen=True)
class KitIssue:
    """The kit for one participant's dosing visit."""

    participant: str
    randomization_number: str
    visit: int
    visit_name: str
    kit: str
    visit_date: str
    repeat: bool
    note: str = ""
    """Set when a repeat request gave another date: that date was not recorded."""


@dataclass(frozen=True)
class KitReplacement:
    """A voided kit and the spare issued in its place."""

    voided: str
    kit: str
    participant: str
    visit: int


@dataclass(frozen=True)
class ParticipantVoid:
    """A randomization marked as made in error; its slot stays used."""

    participant: str
    randomization_number: str
    voided_at: str
    voided_by: str
    reason: str


@dataclass(frozen=True)
class Preparation:
    """What the pharmacy prepares for one kit (unblinded)."""

    kit: str
    arm: str
    label: str
    description: str
    instructions: str
    participant: str
    randomization_number: str
    visit: int
    visit_name: str
    prepared_at: str


@dataclass(frozen=True)
class PharmacyKit:
    """A kit row of the pharmacy list (unblinded), with its history.

    ``status`` says what happened: available, requested (by an investigator,
    not prepared yet), prepared, voided. Times are UTC ISO 8601; empty when
    it did not happen.
    """

    kit: str
    arm: str
    label: str
    status: str
    spare: bool
    participant: str
    visit: int | None
    randomization_number: str = ""
    visit_date: str = ""
    """The dosing date the kit was requested for."""
    requested_at: str = ""
    requested_by: str = ""
    prepared_at: str = ""
    prepared_by: str = ""
    void_reason: str = ""
    replaced_by: str = ""
    """The kit issued in place of this voided one."""


@dataclass(frozen=True)
class IssuedKit:
    """A kit issued to a participant for one visit, as a blinded role sees it (no content)."""

    visit: int
    kit: str
    status: str
    visit_date: str


@dataclass(frozen=True)
class KitLabel:
    """What the label of a prepared infusion bag shows: never the arm."""

    trial: str
    kit: str
    participant: str
    randomization_number: str
    visit: int
    visit_name: str


@dataclass(frozen=True)
class ParticipantVisits:
    """One participant as its site plans visits: number, visits done, the next window.

    ``next_visit`` and its window are empty (None) once every dosing visit is done.
    ``kits`` lists every kit issued to the participant by visit, voided ones
    included with their status.
    """

    participant: str
    randomization_number: str
    site: str
    randomized_on: str
    randomized_at: str
    randomized_by: str
    visits_done: int
    last_visit_date: str | None
    next_visit: int | None
    next_visit_name: str | None
    window_from: str | None
    window_to: str | None
    kits: list[IssuedKit]
    emergency_unblinded: bool
    status: str = "randomized"
    """``randomized``, or ``voided`` once the randomization is marked as made in error."""
    voided_at: str | None = None
    voided_by: str | None = None
    void_reason: str | None = None


@dataclass(frozen=True)
class ReviewItem:
    """One emergency unblinding to review: who, when and why, never the arm."""

    id: int
    participant: str
    site: str
    randomization_number: str
    unblinded_at: str
    unblinded_by: str
    reason: str
    status: str
    closed_at: str | None = None
    closed_by: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class BlockBalance:
    """Arms assigned so far within one block of one stratum."""

    stratum: str
    block: int
    block_size: int
    assigned: dict[str, int]


@dataclass(frozen=True)
class ListedAllocation:
    """One randomized participant's place in its stratum's list, with the arm (unblinded only)."""

    stratum: str
    sequence: int
    block: int
    arm: str


@dataclass(frozen=True)
class Report:
    """Trial status. ``by_arm`` and ``by_block`` are empty for blinded roles before lock.

    ``open_reviews`` counts emergency unblindings not yet reviewed; ``reviews``
    lists them (reason, never arm) for the reviewing roles, admin and monitor.
    """

    trial: str
    locked: bool
    planned: int
    randomized: int
    screen_failures: int
    emergency_unblindings: int
    by_site: dict[str, int]
    by_date: dict[str, int]
    kits: dict[str, int]
    arms_shown: bool
    by_arm: dict[str, dict[str, int]] = field(default_factory=dict)
    by_block: list[BlockBalance] = field(default_factory=list)
    imbalance: float | None = None
    imbalance_bound: float | None = None
    open_reviews: int = 0
    reviews: list[ReviewItem] = field(default_factory=list)
    by_site_date: dict[str, dict[str, int]] = field(default_factory=dict)
    """Participants randomized per site (sorted) and date (sorted)."""
    screen_failures_by_date: dict[str, int] = field(default_factory=dict)
    """Screen failures per date (UTC day of the refusal)."""
    kits_by_visit: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per dosing visit (``"1"``, ``"2"``...): kits ``requested``, ``prepared``, ``voided``."""
    spares_left: int = 0
    """Spare kits not yet issued as a replacement."""
    allocations: list[ListedAllocation] = field(default_factory=list)
    """Randomized participants in list order per stratum, with their arms (unblinded only)."""
    arm_ratio: dict[str, int] = field(default_factory=dict)
    """The design's arms and their ratio (unblinded only)."""


@dataclass(frozen=True)
class Unblinding:
    """One participant's arm, revealed in an emergency."""

    participant: str
    randomization_number: str
    arm: str
    label: str
    unblinded_at: str


@dataclass(frozen=True)
class LoginUnlock:
    """What an admin's lift of a login lock did: whether there was any wait or lock to clear."""

    user: str
    client: str | None
    lifted: bool


@dataclass(frozen=True)
class LockResult:
    """When and why the database was locked."""

    trial: str
    locked_at: str
    locked_by: str
    reason: str
    participants: int


@dataclass(frozen=True)
class Export:
    """The full unblinding (or its dummy) as CSV bytes and their SHA-256.

    ``files`` holds the analysis files by name (``participants.csv``,
    ``kits.csv``, ``adsl.csv``, ``columns.json``; see
    :mod:`randomizer.unblinding.analysis`).
    """

    csv: bytes
    sha256: str
    participants: int
    files: dict[str, bytes] = field(default_factory=dict)
    file_sha256: dict[str, str] = field(default_factory=dict)
    """The SHA-256 (hex) of each analysis file, by name."""
    written: dict[str, str] = field(default_factory=dict)
    """Where each file was written (the CSV under :data:`LEGACY_FILE`) when the export
    went to disk (``unblind_all(out=...)``); then ``csv`` and ``files`` are empty."""
