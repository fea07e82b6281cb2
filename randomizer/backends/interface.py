"""The operations a user can ask of a trial, as one typed protocol.

Every command and every web page calls these methods and nothing else, so the
same request gives the same result, the same refusal and the same audit event
whether it runs in-process (:class:`~randomizer.backends.local.LocalBackend`,
on the host that holds the key and the database) or through the trial server
(the HTTP client). Results are the library's frozen dataclasses; refusals are
the library's :class:`~randomizer.errors.RandomizerError` subclasses.

Signed actions take the signer's :class:`~randomizer.signatures.Signature`
(the password re-entered at the moment of signing and the meaning shown), checked
behind the call whatever login the backend holds.

Custody operations (creating a trial, rotating the key, backups, restores,
schema upgrades) need the key file or the database file itself, so they are a
separate protocol, :class:`Custody`, that only a backend running on the
trial's host offers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Protocol

from randomizer import audit, integrity, logins, mail, maintenance, participants, reports, trial
from randomizer.access import Role
from randomizer.allocation import service
from randomizer.design import TrialDesign
from randomizer.signatures import Signature
from randomizer.store import SchemaStatus
from randomizer.unblinding import emergency, review
from randomizer.unblinding import lock as locking


class Backend(Protocol):
    """What a logged-in user can do; the role check happens behind it, never in front."""

    def close(self) -> None:
        """Release connections held for this backend."""

    def trial_design(self) -> TrialDesign:
        """The trial's design (public: arms, criteria, visits; no allocation)."""

    # users -------------------------------------------------------------------

    def add_user(
        self, name: str, role: Role, password: str, sites: Sequence[str] = ()
    ) -> trial.UserInfo:
        """Add a user with a role, limited to ``sites`` if any (admin)."""

    def list_users(self) -> list[trial.UserInfo]:
        """Every user (admin)."""

    def disable_user(self, name: str, reason: str) -> trial.UserInfo:
        """Disable a user; their logins end at once (admin)."""

    def change_password(self, name: str | None, password: str) -> trial.UserInfo:
        """Change one's own password, or (admin) another user's."""

    def lift_login_lock(self, name: str, client: str | None = None) -> logins.LoginUnlock:
        """Clear failed logins and any lock of a user name, and of ``client`` if given (admin)."""

    # the list ----------------------------------------------------------------

    def generate_list(self) -> trial.ListSummary:
        """Generate the sealed list and kits from a fresh secret seed (admin)."""

    def list_status(self) -> trial.ListStatus:
        """Whether the list exists and how much of it is used: counts only (any role)."""

    def verify_list(self) -> trial.ListSummary:
        """Regenerate the list from the sealed seed and compare (admin; statistician after lock)."""

    def approve_list(self, *, signature: Signature) -> trial.ListApproval:
        """Approve the draft list for go-live (admin or statistician, not its generator); signed."""

    # the blinded path ----------------------------------------------------------

    def randomize(
        self,
        participant: str,
        site: str,
        levels: dict[str, str],
        answers: dict[str, str],
        on: date | None = None,
        *,
        signature: Signature,
    ) -> service.Randomization:
        """Randomize one eligible participant (investigator); signed."""

    def request_kit(
        self,
        participant: str,
        visit: int,
        on: date | None = None,
        override_reason: str | None = None,
    ) -> service.KitIssue:
        """The kit of one dosing visit (investigator)."""

    def replace_kit(self, code: str, reason: str) -> service.KitReplacement:
        """Void a kit and issue a spare of the same content (investigator)."""

    def prepare_kit(self, code: str) -> service.Preparation:
        """What a kit holds; records its preparation (pharmacist)."""

    def pharmacy_list(self) -> list[service.PharmacyKit]:
        """Every kit with content and status (pharmacist)."""

    def emergency_unblind(
        self, participant: str, reason: str, *, signature: Signature
    ) -> emergency.Unblinding:
        """Break the code for one participant, at once, with a reason (investigator, admin);
        signed."""

    def void_participant(
        self, participant: str, reason: str, *, signature: Signature
    ) -> service.ParticipantVoid:
        """Mark a randomization made in error; the slot stays used (admin); signed."""

    def lock(self, reason: str, *, signature: Signature) -> locking.LockResult:
        """Lock the database (admin); signed."""

    def unblind_all(self, *, signature: Signature, out: Path | None = None) -> locking.Export:
        """The full unblinding as CSV (statistician, after lock), audited before returned;
        signed. With ``out``, written there and beside it (:mod:`randomizer.exportfiles`:
        never over a file, nothing left behind on a refusal) instead of returned."""

    def unblind_dummy(self) -> locking.Export:
        """The full unblinding's CSV with made-up arms, marked dummy (statistician, any time)."""

    def report(self) -> reports.Report:
        """The report the caller's role may see."""

    # the audit trail ---------------------------------------------------------

    def audit_events(self, since: int = 0, limit: int | None = None) -> list[audit.AuditEvent]:
        """Audit events after ``since`` (admin, monitor)."""

    def audit_verify(self, checkpoint: audit.Checkpoint | None = None) -> audit.ChainReport:
        """Verify the chain and, given a checkpoint whose signature the caller checked,
        that its head is still there (admin, monitor)."""

    def audit_checkpoint(self) -> audit.Checkpoint:
        """Record a checkpoint of the head and return it unsigned; the caller signs it (admin)."""

    # per-site rights -----------------------------------------------------------

    def user_sites(self, name: str) -> trial.UserInfo:
        """One user and the sites they are limited to (admin)."""

    def set_user_sites(self, name: str, sites: Sequence[str]) -> trial.UserInfo:
        """Limit a user to ``sites``; none makes them trial-wide (admin)."""

    def participant_view(self, site: str | None = None) -> list[participants.ParticipantVisits]:
        """The participants the caller may see (of ``site``): visits done, next window."""

    def kit_label(self, code: str) -> service.KitLabel:
        """The label of a prepared kit's infusion bag, never the arm (pharmacist)."""

    # second-person review of emergency unblindings ------------------------------

    def unblinding_reviews(self, open_only: bool = True) -> list[review.ReviewItem]:
        """Emergency unblindings to review, with reason and never the arm (admin, monitor)."""

    def close_review(self, review_id: int, note: str) -> review.ReviewItem:
        """Close one review with a note; not by the user who unblinded (admin, monitor)."""

    def verify_database(
        self, checkpoint: audit.Checkpoint | None = None
    ) -> integrity.IntegrityReport:
        """Check every row MAC, the audit chain, the rows the trail records and the list
        (admin, monitor); problems are reported, not raised."""

    def pharmacy_queue(self) -> list[service.PharmacyKit]:
        """Kits requested and not yet prepared, oldest request first (pharmacist);
        audited as the pharmacy list is."""

    def lookup_kit(self, code: str) -> service.PharmacyKit:
        """One kit with content, status and history, by its typed or scanned code
        (pharmacist); audited as the pharmacy list is."""


class Custody(Protocol):
    """Operations on the trial's host itself: they need the key file or the database file."""

    def init(self, design_toml: str, source: str, admin: str, password: str) -> trial.InitResult:
        """Create the trial database, key file and first admin from a design's TOML text."""

    def rotate_key(self, new_key_file: Path) -> str:
        """Rotate to a new key file: a new data key, every sealed value sealed again (admin)."""

    def db_status(self) -> SchemaStatus:
        """Schema revision of the database against this release (no login needed)."""

    def db_upgrade(self) -> maintenance.UpgradeResult:
        """Migrate the schema to this release (admin)."""

    def backup(self, out: Path) -> maintenance.BackupResult:
        """A consistent online copy of a SQLite database, verified with the key (admin)."""

    def restore(self, backup_file: Path) -> maintenance.BackupResult:
        """Bring a backup back as a new database, verified and audited (admin)."""

    def send_mail(self, settings: mail.MailSettings) -> mail.DeliveryReport:
        """Send the notification e-mails that are due, with the host's SMTP settings (admin)."""
