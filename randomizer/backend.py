"""The operations the CLI needs, as one object per database.

:class:`LocalBackend` calls the library directly, one transaction per call
(see :mod:`randomizer.context`). A later HTTP client can offer the same
methods and return the same dataclasses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TypeVar

from randomizer import audit, maintenance, reports, trial
from randomizer.access import Permission, Role
from randomizer.allocation import service
from randomizer.context import Credentials, Operation, load_trial, open_vault, operation
from randomizer.design import TrialDesign, design_text, parse_design
from randomizer.errors import Hint, InvalidInput
from randomizer.store import SchemaStatus, Store
from randomizer.unblinding import emergency
from randomizer.unblinding import lock as locking

T = TypeVar("T")


class LocalBackend:
    """Runs each operation in-process against ``db_url`` with the trial key in ``key_file``."""

    def __init__(self, db_url: str, key_file: Path,
                 credentials: Callable[[], Credentials],
                 clock: Callable[[], datetime] = audit.now_utc) -> None:
        self.db_url = db_url
        self.key_file = key_file
        self._credentials = credentials
        self._clock = clock
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        """The database, opened on first use."""
        return self._open_store(create=False)

    def _open_store(self, create: bool) -> Store:
        if self._store is None:
            self._store = Store(self.db_url, create=create)
        return self._store

    def close(self) -> None:
        """Release database connections."""
        if self._store is not None:
            self._store.dispose()

    def _run(self, permission: Permission, action: str, body: Callable[[Operation], T],
             subject: str = "", schema_check: bool = True) -> T:
        with operation(self.store, self.key_file, self._credentials(), permission, action,
                       self._clock(), subject=subject, schema_check=schema_check) as op:
            return body(op)

    # setup and custody -------------------------------------------------

    def init(self, design_ref: str, admin: str, password: str) -> trial.InitResult:
        """Create the trial database, key file and first admin."""
        text = design_text(design_ref)
        design = parse_design(text, source=design_ref)
        return trial.init_trial(self._open_store(create=True), self.key_file, design, text,
                                admin, password, self._clock())

    def add_user(self, name: str, role: Role, password: str) -> trial.UserInfo:
        """Add a user with a role."""
        return self._run(Permission.MANAGE_USERS, "user.add",
                         lambda op: trial.add_user(op, name, role, password), name)

    def list_users(self) -> list[trial.UserInfo]:
        """All users."""
        return self._run(Permission.MANAGE_USERS, "user.list", trial.list_users)

    def disable_user(self, name: str, reason: str) -> trial.UserInfo:
        """Disable a user."""
        return self._run(Permission.MANAGE_USERS, "user.disable",
                         lambda op: trial.disable_user(op, name, reason), name)

    def change_password(self, name: str | None, password: str) -> trial.UserInfo:
        """Change one's own password, or (admin) another user's."""
        return self._run(Permission.REPORT, "user.passwd",
                         lambda op: trial.change_password(op, name or op.user.name, password),
                         name or "")

    def rotate_key(self, new_key_file: Path) -> str:
        """Re-wrap the data key under a new key file (removed again if the commit fails)."""
        existed = new_key_file.exists()
        try:
            return self._run(Permission.ROTATE_KEY, "key.rotate",
                             lambda op: trial.rotate_key(op, self.key_file, new_key_file))
        except BaseException:
            if not existed:
                new_key_file.unlink(missing_ok=True)
            raise

    def generate_list(self) -> trial.ListSummary:
        """Generate the sealed list and kits."""
        return self._run(Permission.GENERATE_LIST, "list.generate", trial.generate_list)

    def verify_list(self) -> trial.ListSummary:
        """Regenerate from the sealed seed and compare."""
        return self._run(Permission.VERIFY_LIST, "list.verify", trial.verify_list)

    # audit ---------------------------------------------------------------

    def audit_events(self, since: int = 0, limit: int | None = None) -> list[audit.AuditEvent]:
        """Read audit events after ``since``."""
        return self._run(Permission.READ_AUDIT, "audit.show",
                         lambda op: audit.events(op.session, since, limit))

    def audit_verify(self, note: str | None = None,
                     public_key: bytes | None = None) -> audit.ChainReport:
        """Verify the chain and, given a signed note, that its head is still there."""
        checkpoint = None
        if note is not None:
            if public_key is None:
                raise InvalidInput("a checkpoint note is checked with the public key that "
                                   "signed it: give that public key too",
                                   hint=Hint.CHECKPOINT_KEY)
            checkpoint = audit.read_checkpoint(note, public_key)

        def body(op: Operation) -> audit.ChainReport:
            if checkpoint is not None and checkpoint.trial != op.trial.id:
                raise InvalidInput(f"the checkpoint is for trial {checkpoint.trial!r}, "
                                   f"not {op.trial.id!r}")
            report = audit.verify(op.session, op.vault.audit_key(), checkpoint)
            op.audit("audit.verify", details={"events": report.events,
                                              "checkpoint": report.checkpoint_seq})
            return report
        return self._run(Permission.READ_AUDIT, "audit.verify", body)

    def audit_checkpoint(self, private_pem: bytes) -> str:
        """A signed note of the current head, to file outside the database."""
        def body(op: Operation) -> str:
            audit.verify(op.session, op.vault.audit_key())
            event = op.audit("audit.checkpoint")
            return audit.sign_checkpoint(audit.Checkpoint(op.trial.id, event.seq, event.mac,
                                                          event.at), private_pem)
        return self._run(Permission.CHECKPOINT_AUDIT, "audit.checkpoint", body)


    # the blinded path ------------------------------------------------------

    def trial_design(self) -> TrialDesign:
        """The trial's design (not blinded: arms, criteria and visits are public)."""
        with self.store.transaction() as session:
            self.store.check_schema(session)
            return parse_design(load_trial(session).design_toml)

    def today(self) -> date:
        """Today's local date by the backend's clock."""
        return self._clock().astimezone().date()

    def randomize(self, participant: str, site: str, levels: dict[str, str],
                  answers: dict[str, str], on: date | None = None) -> service.Randomization:
        """Randomize one participant (investigator)."""
        return self._run(Permission.RANDOMIZE, "randomize", lambda op: service.randomize(
            op, participant, site, levels, answers, on or op.today), participant)

    def request_kit(self, participant: str, visit: int, on: date | None = None,
                    override_reason: str | None = None) -> service.KitIssue:
        """The kit of one dosing visit (investigator)."""
        return self._run(Permission.DISPENSE, "kit.request", lambda op: service.request_kit(
            op, participant, visit, on, override_reason), participant)

    def replace_kit(self, code: str, reason: str) -> service.KitReplacement:
        """Void a kit and issue a spare of the same content (investigator)."""
        return self._run(Permission.DISPENSE, "kit.replace",
                         lambda op: service.replace_kit(op, code, reason), code)

    def prepare_kit(self, code: str) -> service.Preparation:
        """What a kit holds; records its preparation (pharmacist)."""
        return self._run(Permission.PREPARE, "pharmacy.prepare",
                         lambda op: service.prepare_kit(op, code), code)

    def pharmacy_list(self) -> list[service.PharmacyKit]:
        """Every kit with content and status (pharmacist)."""
        return self._run(Permission.LIST_KITS, "pharmacy.list", service.pharmacy_list)

    def emergency_unblind(self, participant: str, reason: str) -> emergency.Unblinding:
        """Break the code for one participant (investigator, admin)."""
        return self._run(Permission.EMERGENCY_UNBLIND, "unblind.emergency",
                         lambda op: emergency.emergency_unblind(op, participant, reason),
                         participant)

    def lock(self, reason: str) -> locking.LockResult:
        """Lock the database (admin)."""
        return self._run(Permission.LOCK, "lock", lambda op: locking.lock(op, reason))

    def unblind_all(self) -> locking.Export:
        """The full unblinding as CSV (statistician, after lock). Audited before returned."""
        return self._run(Permission.UNBLIND_ALL, "unblind.all", locking.unblind_all)

    def report(self) -> reports.Report:
        """The report the caller's role may see."""
        return self._run(Permission.REPORT, "report", reports.report)

    # maintenance -----------------------------------------------------------

    def db_status(self) -> SchemaStatus:
        """Schema revision of the database against this release (no login needed)."""
        with self.store.transaction() as session:
            return self.store.status(session)

    def db_upgrade(self) -> maintenance.UpgradeResult:
        """Migrate the schema to this release (admin)."""
        return self._run(Permission.MAINTAIN, "db.upgrade",
                         lambda op: maintenance.upgrade(op, self.store), schema_check=False)

    def backup(self, out: Path) -> maintenance.BackupResult:
        """A consistent online copy of a SQLite database, verified with the key (admin)."""
        source = maintenance.sqlite_path(self.store)
        self._run(Permission.MAINTAIN, "backup",
                  lambda op: maintenance.record_backup(op, self.store, out), str(out))
        maintenance.copy_sqlite(source, out)
        copy = Store(f"sqlite:///{out}")
        try:
            with copy.transaction() as session:
                copy.check_schema(session)
                vault = open_vault(load_trial(session), self.key_file)
                events = audit.verify(session, vault.audit_key()).events
        except BaseException:
            copy.dispose()
            out.unlink(missing_ok=True)
            raise
        copy.dispose()
        return maintenance.BackupResult(file=str(out), sha256=maintenance.settle(out),
                                        audit_events=events)

    def restore(self, backup_file: Path) -> maintenance.BackupResult:
        """Bring a backup back as this backend's (new) database, verified, audited (admin)."""
        target = maintenance.sqlite_path(self._open_store(create=True))
        if not backup_file.is_file():
            raise InvalidInput(f"backup file {backup_file} not found")
        digest = hashlib.sha256(backup_file.read_bytes()).hexdigest()
        maintenance.copy_sqlite(backup_file, target)
        try:
            def body(op: Operation) -> int:
                events = maintenance.verify_copy(op)
                trial.verify_list(op)
                op.audit("restore", subject=str(backup_file), details={"sha256": digest})
                return events
            events = self._run(Permission.MAINTAIN, "restore", body)
        except BaseException:
            self.store.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            raise
        return maintenance.BackupResult(file=str(target), sha256=digest, audit_events=events)
