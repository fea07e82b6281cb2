"""The in-process backend: runs each operation against the database with the trial key.

It is what the trial server runs for every request and what the local CLI
runs on the trial's host. Each call is one transaction (see
:mod:`randomizer.context`); the password is checked once, before the first
call's transaction, or the server hands over a principal it established from
a token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TypeVar

from randomizer import (
    audit,
    integrity,
    logins,
    mail,
    maintenance,
    participants,
    reports,
    rotation,
    sites,
    trial,
)
from randomizer.access import Permission, Role
from randomizer.allocation import service
from randomizer.context import (
    Credentials,
    KeySource,
    Operation,
    Principal,
    authenticate,
    fault_point,
    key_file_source,
    load_trial,
    operation,
)
from randomizer.design import TrialDesign, parse_design
from randomizer.exportfiles import ExportFiles
from randomizer.signatures import Signature
from randomizer.store import SchemaStatus, Store
from randomizer.unblinding import dummy, emergency, review
from randomizer.unblinding import lock as locking

T = TypeVar("T")


class LocalBackend:
    """Runs each operation in-process; implements both ``Backend`` and ``Custody``.

    For the CLI, give ``db_url``, ``key_file`` and ``credentials`` (asked for
    only when an operation needs a login). The server uses :meth:`serving`.
    """

    def __init__(
        self,
        db_url: str,
        key_file: Path,
        credentials: Callable[[], Credentials] | None = None,
        clock: Callable[[], datetime] = audit.now_utc,
    ) -> None:
        self.db_url = db_url
        self.key_file = key_file
        self._trial_key: KeySource = key_file_source(key_file)
        self._credentials = credentials
        self._principal: Principal | None = None
        self._clock = clock
        self._store: Store | None = None
        self._owns_store = True

    @classmethod
    def serving(
        cls,
        store: Store,
        trial_key: bytes,
        principal: Principal,
        clock: Callable[[], datetime] = audit.now_utc,
    ) -> LocalBackend:
        """A backend for one server request: shared store, key held in memory, known user."""
        backend = cls(store.url, Path(), None, clock)
        backend._store = store
        backend._owns_store = False
        backend._trial_key = lambda: trial_key
        backend._principal = principal
        return backend

    @property
    def store(self) -> Store:
        """The database, opened on first use."""
        return self._open_store(create=False)

    def _open_store(self, create: bool) -> Store:
        if self._store is None:
            self._store = Store(self.db_url, create=create)
        return self._store

    def close(self) -> None:
        """Release database connections (a server's shared store stays open)."""
        if self._store is not None and self._owns_store:
            self._store.dispose()

    def login(self, action: str = "login", schema_check: bool = True) -> Principal:
        """Check the password once (outside any write transaction) and keep the principal."""
        if self._principal is None:
            if self._credentials is None:
                raise RuntimeError("this backend has no credentials to log in with")
            self._principal = authenticate(
                self.store,
                self._trial_key,
                self._credentials(),
                self._clock(),
                action=action,
                schema_check=schema_check,
            )
        return self._principal

    def _run(
        self,
        permission: Permission,
        action: str,
        body: Callable[[Operation], T],
        subject: str = "",
        schema_check: bool = True,
        signature: Signature | None = None,
        check_trial: bool = True,
    ) -> T:
        principal = self.login(action, schema_check)
        signed = None
        if signature is not None:
            signed = logins.sign(
                self.store, self._trial_key, principal, signature, action, subject, self._clock()
            )
        with operation(
            self.store,
            self._trial_key,
            principal,
            permission,
            action,
            self._clock(),
            subject=subject,
            schema_check=schema_check,
            signature=signed,
            check_trial=check_trial,
        ) as op:
            result = body(op)
        if principal.fresh_login and self._principal is principal:
            # the login is recorded once, by the first action it let through: a backend
            # kept for several actions checked the password only once
            self._principal = dataclasses.replace(principal, fresh_login=False)
        return result

    # setup and custody -------------------------------------------------

    def init(self, design_toml: str, source: str, admin: str, password: str) -> trial.InitResult:
        """Create the trial database, key file and first admin from a design's TOML text."""
        design = parse_design(design_toml, source=source)
        return trial.init_trial(
            self._open_store(create=True),
            self.key_file,
            design,
            design_toml,
            admin,
            password,
            self._clock(),
        )

    def add_user(
        self, name: str, role: Role, password: str, sites: Sequence[str] = ()
    ) -> trial.UserInfo:
        """Add a user with a role, limited to ``sites`` if any."""
        return self._run(
            Permission.MANAGE_USERS,
            "user.add",
            lambda op: trial.add_user(op, name, role, password, sites),
            name,
        )

    def list_users(self) -> list[trial.UserInfo]:
        """All users."""
        return self._run(Permission.MANAGE_USERS, "user.list", trial.list_users)

    def disable_user(self, name: str, reason: str) -> trial.UserInfo:
        """Disable a user."""
        return self._run(
            Permission.MANAGE_USERS,
            "user.disable",
            lambda op: trial.disable_user(op, name, reason),
            name,
        )

    def change_password(self, name: str | None, password: str) -> trial.UserInfo:
        """Change one's own password, or (admin) another user's."""
        return self._run(
            Permission.REPORT,
            "user.passwd",
            lambda op: trial.change_password(op, name or op.user.name, password),
            name or "",
        )

    def lift_login_lock(self, name: str, client: str | None = None) -> logins.LoginUnlock:
        """Clear failed logins and any lock of a user name (and of ``client``)."""
        return self._run(
            Permission.MANAGE_USERS,
            "user.unlock",
            lambda op: logins.lift_login_lock(op, name, client),
            name,
        )

    def rotate_key(self, new_key_file: Path) -> str:
        """A new key file, a new data key, every sealed value sealed again (rotation.py).

        After a failure the new key file is removed unless the database may need it
        (:func:`randomizer.rotation.discard_new_key_file`).
        """
        existed = new_key_file.exists()
        try:
            rotated = self._run(
                Permission.ROTATE_KEY,
                "key.rotate",
                lambda op: rotation.rotate_key(op, self.key_file, new_key_file),
            )
            fault_point("key.rotate:after-commit")
            return rotated.new_key_file
        except BaseException:
            if not existed and new_key_file.exists():
                rotation.discard_new_key_file(self.store, new_key_file)
            raise

    def generate_list(self) -> trial.ListSummary:
        """Generate the sealed list and kits."""
        return self._run(Permission.GENERATE_LIST, "list.generate", trial.generate_list)

    def list_status(self) -> trial.ListStatus:
        """Whether the list exists and how much of it is used: counts only (any role)."""
        return self._run(Permission.REPORT, "list.status", trial.list_status)

    def verify_list(self) -> trial.ListSummary:
        """Regenerate from the sealed seed and compare."""
        return self._run(Permission.VERIFY_LIST, "list.verify", trial.verify_list)

    def approve_list(self, *, signature: Signature) -> trial.ListApproval:
        """Approve the draft list for go-live (admin or statistician, not its generator); signed."""
        return self._run(
            Permission.APPROVE_LIST, "list.approve", trial.approve_list, signature=signature
        )

    # audit ---------------------------------------------------------------

    def audit_events(self, since: int = 0, limit: int | None = None) -> list[audit.AuditEvent]:
        """Read audit events after ``since``."""
        return self._run(
            Permission.READ_AUDIT, "audit.show", lambda op: sites.visible_events(op, since, limit)
        )

    def audit_verify(self, checkpoint: audit.Checkpoint | None = None) -> audit.ChainReport:
        """Verify the chain and, given a checkpoint, that its head is still there."""
        return self._run(
            Permission.READ_AUDIT, "audit.verify", lambda op: audit.verify_trail(op, checkpoint)
        )

    def audit_checkpoint(self) -> audit.Checkpoint:
        """Record a checkpoint of the head; returned unsigned for the caller to sign."""
        return self._run(Permission.CHECKPOINT_AUDIT, "audit.checkpoint", audit.take_checkpoint)

    def verify_database(
        self, checkpoint: audit.Checkpoint | None = None
    ) -> integrity.IntegrityReport:
        """Check every row MAC, the audit chain, the rows the trail records and the list."""
        return self._run(
            Permission.VERIFY,
            "verify",
            lambda op: integrity.verify_database(op, checkpoint),
            check_trial=False,
        )

    # the blinded path ------------------------------------------------------

    def trial_design(self) -> TrialDesign:
        """The trial's design (not blinded: arms, criteria and visits are public)."""
        with self.store.transaction(read_only=True) as session:
            self.store.check_schema(session)
            return parse_design(load_trial(session).design_toml)

    def today(self) -> date:
        """Today's local date by the backend's clock."""
        return self._clock().astimezone().date()

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
        """Randomize one participant (investigator); signed."""
        return self._run(
            Permission.RANDOMIZE,
            "randomize",
            lambda op: service.randomize(op, participant, site, levels, answers, on or op.today),
            participant,
            signature=signature,
        )

    def request_kit(
        self,
        participant: str,
        visit: int,
        on: date | None = None,
        override_reason: str | None = None,
    ) -> service.KitIssue:
        """The kit of one dosing visit (investigator)."""
        return self._run(
            Permission.DISPENSE,
            "kit.request",
            lambda op: service.request_kit(op, participant, visit, on, override_reason),
            participant,
        )

    def replace_kit(self, code: str, reason: str) -> service.KitReplacement:
        """Void a kit and issue a spare of the same content (investigator)."""
        return self._run(
            Permission.DISPENSE,
            "kit.replace",
            lambda op: service.replace_kit(op, code, reason),
            code,
        )

    def prepare_kit(self, code: str) -> service.Preparation:
        """What a kit holds; records its preparation (pharmacist)."""
        return self._run(
            Permission.PREPARE, "pharmacy.prepare", lambda op: service.prepare_kit(op, code), code
        )

    def pharmacy_list(self) -> list[service.PharmacyKit]:
        """Every kit with content and status (pharmacist)."""
        return self._run(Permission.LIST_KITS, "pharmacy.list", service.pharmacy_list)

    def emergency_unblind(
        self, participant: str, reason: str, *, signature: Signature
    ) -> emergency.Unblinding:
        """Break the code for one participant (investigator, admin); signed."""
        return self._run(
            Permission.EMERGENCY_UNBLIND,
            "unblind.emergency",
            lambda op: emergency.emergency_unblind(op, participant, reason),
            participant,
            signature=signature,
        )

    def void_participant(
        self, participant: str, reason: str, *, signature: Signature
    ) -> service.ParticipantVoid:
        """Mark a randomization made in error; the slot stays used (admin); signed."""
        return self._run(
            Permission.VOID_PARTICIPANT,
            "participant.void",
            lambda op: service.void_participant(op, participant, reason),
            participant,
            signature=signature,
        )

    def lock(self, reason: str, *, signature: Signature) -> locking.LockResult:
        """Lock the database (admin); signed."""
        return self._run(
            Permission.LOCK, "lock", lambda op: locking.lock(op, reason), signature=signature
        )

    def unblind_all(self, *, signature: Signature, out: Path | None = None) -> locking.Export:
        """The full unblinding as CSV (statistician, after lock), audited first; signed.

        With ``out``, streamed into temporary files beside it, which get their names
        (``out`` and its companions) only once every row passed and the audit event
        is committed; removed on any failure.
        """
        if out is None:
            return self._run(
                Permission.UNBLIND_ALL, "unblind.all", locking.unblind_all, signature=signature
            )
        with ExportFiles(out) as files:
            export = self._run(
                Permission.UNBLIND_ALL,
                "unblind.all",
                lambda op: locking.unblind_all(op, files),
                signature=signature,
            )
            files.publish()
        return export

    def unblind_dummy(self) -> locking.Export:
        """The full unblinding's CSV with made-up arms, marked dummy (statistician)."""
        return self._run(Permission.DUMMY_UNBLIND, "unblind.dummy", dummy.unblind_dummy)

    def report(self) -> reports.Report:
        """The report the caller's role may see."""
        return self._run(Permission.REPORT, "report", reports.report)

    # per-site rights -------------------------------------------------------

    def user_sites(self, name: str) -> trial.UserInfo:
        """One user and the sites they are limited to (admin)."""
        return self._run(
            Permission.MANAGE_USERS,
            "user.sites",
            lambda op: trial.show_user_sites(op, name),
            name,
        )

    def set_user_sites(self, name: str, sites: Sequence[str]) -> trial.UserInfo:
        """Limit a user to ``sites``; none makes them trial-wide (admin)."""
        return self._run(
            Permission.MANAGE_USERS,
            "user.sites",
            lambda op: trial.set_user_sites(op, name, sites),
            name,
        )

    def participant_view(self, site: str | None = None) -> list[participants.ParticipantVisits]:
        """The participants the caller may see (of ``site``): visits done, next window."""
        return self._run(
            Permission.READ_PARTICIPANTS,
            "participant.list",
            lambda op: participants.participant_view(op, site),
            site or "",
        )

    def kit_label(self, code: str) -> service.KitLabel:
        """The label of a prepared kit's infusion bag (pharmacist)."""
        return self._run(
            Permission.PREPARE, "pharmacy.label", lambda op: service.kit_label(op, code), code
        )

    def pharmacy_queue(self) -> list[service.PharmacyKit]:
        """Kits requested and not yet prepared, oldest request first (pharmacist);
        audited as the pharmacy list is."""
        return self._run(Permission.LIST_KITS, "pharmacy.list", service.pharmacy_queue)

    def lookup_kit(self, code: str) -> service.PharmacyKit:
        """One kit with content, status and history, by its typed or scanned code
        (pharmacist); audited as the pharmacy list is."""
        # no subject: its events, refusals included, are the pharmacy list's own
        return self._run(
            Permission.LIST_KITS, "pharmacy.list", lambda op: service.lookup_kit(op, code)
        )

    def unblinding_reviews(self, open_only: bool = True) -> list[review.ReviewItem]:
        """Emergency unblindings to review (admin, monitor)."""
        return self._run(
            Permission.REVIEW_UNBLINDING,
            "unblind.review.list",
            lambda op: review.list_reviews(op, open_only),
        )

    def close_review(self, review_id: int, note: str) -> review.ReviewItem:
        """Close one review with a note; not by the unblinder (admin, monitor)."""
        return self._run(
            Permission.REVIEW_UNBLINDING,
            "unblind.review.close",
            lambda op: review.close_review(op, review_id, note),
            str(review_id),
        )

    # maintenance -----------------------------------------------------------

    def db_status(self) -> SchemaStatus:
        """Schema revision of the database against this release (no login needed)."""
        with self.store.transaction(read_only=True) as session:
            return self.store.status(session)

    def db_upgrade(self) -> maintenance.UpgradeResult:
        """Migrate the schema to this release (admin)."""
        return self._run(
            Permission.MAINTAIN,
            "db.upgrade",
            lambda op: maintenance.upgrade(op, self.store),
            schema_check=False,
        )

    def backup(self, out: Path) -> maintenance.BackupResult:
        """A consistent online copy of a SQLite database, verified with the key (admin)."""
        return maintenance.backup(
            self.store, self._trial_key, self.login("backup"), self._clock(), out
        )

    def restore(self, backup_file: Path) -> maintenance.BackupResult:
        """Bring a backup back as this backend's (new) database, verified, audited (admin)."""
        store = self._open_store(create=True)
        return maintenance.restore(
            store, self._trial_key, lambda: self.login("restore"), self._clock(), backup_file
        )

    def send_mail(self, settings: mail.MailSettings) -> mail.DeliveryReport:
        """Send the notification e-mails that are due (admin; cron's ``mail send``).

        The role check and its audit event come first, in their own transaction;
        the sending runs outside it (:func:`randomizer.mail.deliver_outbox`).
        """
        self._run(
            Permission.SEND_MAIL,
            "mail.send",
            lambda op: op.audit(
                "mail.send", details={"pending": mail.pending_messages(self.store)}
            ),
        )
        return mail.deliver_outbox(self.store, settings, self._clock())
