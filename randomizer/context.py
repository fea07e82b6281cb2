"""One user action as one transaction: open, authenticate, authorise, audit, commit.

:func:`operation` is the only place a transaction for a user action begins.
It reads the key file, opens the trial's data key, authenticates the user and
checks the role before anything else is read. A refusal that matters (a wrong
password, a role without the permission, a state refusal such as a locked
trial, a screen failure) is recorded in the audit trail in a transaction of
its own after the action's transaction has rolled back, so a refused action
changes nothing but the trail. Malformed input (exit 2) records nothing.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.access import Permission, allowed, verify_password
from randomizer.design import TrialDesign, parse_design
from randomizer.errors import (
    AuthenticationFailed,
    Hint,
    Ineligible,
    InvalidInput,
    NotAuthorized,
    RandomizerError,
    StoreError,
)
from randomizer.models import Trial, User
from randomizer.store import Store
from randomizer.vault import Vault, read_key_file, unwrap_data_key

FAULT_ENV = "RANDOMIZER_TEST_FAULT"


def fault_point(name: str) -> None:
    """Crash-test hook, enabled only by the tests through RANDOMIZER_TEST_FAULT.

    ``NAME`` SIGKILLs this process at that point: no cleanup code runs, exactly
    as in a power cut. ``pause:NAME`` sleeps 5 s there instead, so a test can
    take the database server away in the middle of the command.
    """
    wanted = os.environ.get(FAULT_ENV)
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted == f"pause:{name}":
        time.sleep(5)


@dataclass(frozen=True)
class Credentials:
    """Who claims to act: a user name and a password."""

    user: str
    password: str


@dataclass
class Operation:
    """The open transaction of one user action and everything it needs."""

    session: Session
    trial: Trial
    design: TrialDesign
    vault: Vault
    user: User
    now: datetime

    @property
    def today(self) -> date:
        """Today's date where this runs (the site's local calendar, not UTC's)."""
        return self.now.astimezone().date()

    @property
    def locked(self) -> bool:
        """Whether the database lock has been taken."""
        return self.trial.locked_at is not None

    def audit(self, action: str, subject: str = "", reason: str = "",
              details: Mapping[str, Any] | None = None) -> audit.AuditEvent:
        """Append an event in this transaction (before anything is revealed)."""
        return audit.append(self.session, self.vault.audit_key(), now=self.now,
                            user=self.user.name, role=self.user.role, action=action,
                            subject=subject, reason=reason, details=details)

    def require(self, permission: Permission) -> None:
        """Refuse unless the user's role holds ``permission`` now."""
        if not allowed(self.user.role, permission, self.locked):
            raise NotAuthorized(_refusal(self.user.role, permission, self.locked))


def _refusal(role: str, permission: Permission, locked: bool) -> str:
    if allowed(role, permission, locked=True) and not locked:
        return f"role {role} may {permission.value} only after the database lock"
    return f"role {role} may not {permission.value}"


@functools.lru_cache(maxsize=4)
def _design(text: str) -> TrialDesign:
    # The stored design never changes; parse and validate it once per process.
    return parse_design(text)


def load_trial(session: Session) -> Trial:
    """The trial row of this database."""
    trial = session.scalars(select(Trial)).one_or_none()
    if trial is None:
        raise StoreError("this database holds no trial: create the trial first", hint=Hint.INIT)
    return trial


def open_vault(trial: Trial, key_file: Path) -> Vault:
    """The trial's vault, opened with the trial key from ``key_file``."""
    trial_key = read_key_file(key_file)
    return Vault(unwrap_data_key(trial_key, trial.wrapped_data_key), trial.id)


@contextmanager
def operation(store: Store, key_file: Path, credentials: Credentials, permission: Permission,
              action: str, now: datetime, subject: str = "",
              schema_check: bool = True) -> Iterator[Operation]:
    """Run one user action: authenticate, authorise, then yield the open transaction.

    ``action`` and ``subject`` name what is attempted in refusal events.
    ``schema_check=False`` is for ``db upgrade`` alone, which runs on an older schema.
    """
    try:
        credentials.user.encode("utf-8")
    except UnicodeEncodeError:
        # undecodable bytes in --user arrive as lone surrogates, which no database stores
        raise InvalidInput("the user name is not valid text: use UTF-8 characters") from None
    read_key_file(key_file)  # a key-file problem is reported before the database is touched
    refusal: tuple[RandomizerError, str, str] | None = None
    try:
        with store.transaction() as session:
            if schema_check:
                store.check_schema(session)
            trial = load_trial(session)
            vault = open_vault(trial, key_file)
            user = session.scalars(select(User).where(User.name == credentials.user)) \
                .one_or_none()
            if user is None or user.disabled or \
                    not verify_password(credentials.password, user.password_hash):
                why = "unknown user" if user is None else \
                    "disabled user" if user.disabled else "wrong password"
                refusal = (AuthenticationFailed(
                    f"login refused for user {credentials.user!r}: unknown user, wrong "
                    "password or disabled account"), "auth.failed", why)
                raise refusal[0]
            op = Operation(session=session, trial=trial, design=_design(trial.design_toml),
                           vault=vault, user=user, now=now)
            try:
                op.require(permission)
            except NotAuthorized as exc:
                refusal = (exc, "refused", "role")
                raise
            op.audit("auth.login", subject=action)
            try:
                yield op
                fault_point(f"{action}:before-commit")
            except RandomizerError as exc:
                if exc.exit_code == 1:
                    kind = "screen_failure" if isinstance(exc, Ineligible) else "refused"
                    refusal = (exc, kind, type(exc).__name__)
                raise
    except RandomizerError as exc:
        if refusal is not None and refusal[0] is exc:
            _record_refusal(store, key_file, credentials, action, subject, now, *refusal)
        raise


def _record_refusal(store: Store, key_file: Path, credentials: Credentials, action: str,
                    subject: str, now: datetime, exc: RandomizerError, kind: str,
                    why: str) -> None:
    with store.transaction() as session:
        trial = load_trial(session)
        vault = open_vault(trial, key_file)
        user = session.scalars(select(User).where(User.name == credentials.user)).one_or_none()
        name = credentials.user if user is None else user.name
        role = "" if user is None else user.role
        audit.append(session, vault.audit_key(), now=now, user=name[:64], role=role,
                     action=kind, subject=subject[:256],
                     details={"command": action, "refusal": why, "message": str(exc)})
