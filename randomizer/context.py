"""One user action as one transaction: authenticate, authorise, audit, commit.

:func:`authenticate` checks a password outside any write transaction and gives
a :class:`Principal`; the server gets its principal from a token instead.
:func:`operation` is the only place a transaction for a user action begins.
It opens the trial's data key, re-reads the user and checks the role before
anything else is read. A refusal that matters (a wrong password, a role
without the permission, a state refusal such as a locked trial, a screen
failure: every error whose class is ``audited``) is recorded in the audit
trail in a transaction of its own after the action's transaction has rolled
back, so a refused action changes nothing but the trail. Malformed input
records nothing.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, inspect, select
from sqlalchemy.orm import Session

from randomizer import audit, rows
from randomizer import store as stores
from randomizer.access import Permission, allowed, dummy_hash, verify_password
from randomizer.design import TrialDesign, parse_design
from randomizer.errors import (
    AuthenticationFailed,
    DamagedRecord,
    Hint,
    Ineligible,
    IntegrityFailure,
    InvalidInput,
    NotAuthorized,
    RandomizerError,
    StoreError,
)
from randomizer.models import Trial, User
from randomizer.results import Credentials as Credentials
from randomizer.signatures import SignedBy, is_signed
from randomizer.store import Store
from randomizer.vault import KEY_FORMAT_DERIVED, KeyMaterial, Vault, open_keys, read_key_file

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
class Principal:
    """Who acts, as a login established it, and the channel they came through.

    ``session`` is the id of the API token or web session (never the token
    itself) and ``client`` the client's address; both are empty for the local
    CLI. ``fresh_login`` is set when the password was checked for this very
    action, so the action's transaction records the login.
    """

    user: str
    channel: str = "cli"
    session: str = ""
    client: str = ""
    fresh_login: bool = False

    def via(self) -> dict[str, str] | None:
        """The channel as recorded in audit details; None for the local CLI."""
        if self.channel == "cli" and not self.session and not self.client:
            return None
        return {"channel": self.channel, "session": self.session, "client": self.client}


KeySource = Callable[[], bytes]
"""Where an operation gets the trial key: the key file read per command (the
local CLI), or the key the server read once at start and holds in memory."""


def key_file_source(path: Path) -> KeySource:
    """A key source that reads ``path`` each time it is asked."""
    return functools.partial(read_key_file, path)


@dataclass
class Operation:
    """The open transaction of one user action and everything it needs."""

    session: Session
    trial: Trial
    design: TrialDesign
    vault: Vault
    user: User
    now: datetime
    principal: Principal = field(default_factory=lambda: Principal(""))
    signature: SignedBy | None = None
    """The user's electronic signature of this action, when it is a signed one."""

    @property
    def today(self) -> date:
        """Today's date where this runs (the site's local calendar, not UTC's)."""
        return self.now.astimezone().date()

    @property
    def locked(self) -> bool:
        """Whether the database lock has been taken."""
        return self.trial.locked_at is not None

    def audit(
        self,
        action: str,
        subject: str = "",
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> audit.AuditEvent:
        """Append an event in this transaction (before anything is revealed).

        The event of the signed action itself carries the signature (printed name,
        time, meaning) in its details, under ``signature``.
        """
        if self.signature is not None and action == self.signature.action:
            details = {**(details or {}), "signature": self.signature.record()}
        return audit.append(
            self.session,
            self.vault.audit_key(),
            now=self.now,
            user=self.user.name,
            role=self.user.role,
            action=action,
            subject=subject,
            reason=reason,
            details=_with_via(details, self.principal),
        )

    def require(self, permission: Permission) -> None:
        """Refuse unless the user's role holds ``permission`` now."""
        if not allowed(self.user.role, permission, self.locked):
            raise NotAuthorized(_refusal(self.user.role, permission, self.locked))


def _with_via(details: Mapping[str, Any] | None, principal: Principal) -> Mapping[str, Any] | None:
    via = principal.via()
    if via is None:
        return details
    return {**(details or {}), "via": via}


def _refusal(role: str, permission: Permission, locked: bool) -> str:
    if allowed(role, permission, locked=True) and not locked:
        return f"role {role} may {permission.value} only after the database lock"
    return f"role {role} may not {permission.value}"


@functools.lru_cache(maxsize=4)
def _design(text: str) -> TrialDesign:
    # The stored design never changes; parse and validate it once per process.
    return parse_design(text)


# built once: every action runs them
_TRIAL = select(Trial)
_USER_NAMED = select(User).where(User.name == bindparam("name"))


def load_trial(session: Session) -> Trial:
    """The trial row of this database (of this release's schema: ``db upgrade`` migrates
    first, and what runs before it reads plain columns through :func:`plain_vault`)."""
    trial = session.scalars(_TRIAL).one_or_none()
    if trial is None:
        raise StoreError("this database holds no trial: create the trial first", hint=Hint.INIT)
    return trial


def key_material(trial: Trial) -> KeyMaterial:
    """The trial row's stored keys (key format 1 or 2)."""
    return KeyMaterial(
        key_format=trial.key_format,
        wrapped_data_key=trial.wrapped_data_key,
        wrapped_audit_key=trial.wrapped_audit_key,
        wrapped_row_key=trial.wrapped_row_key,
    )


def vault_for(trial: Trial, trial_key: bytes) -> Vault:
    """The trial's vault, opened with the trial key (key format 1 or 2)."""
    return open_keys(trial_key, trial.id, key_material(trial))


def plain_vault(session: Session, trial_key: bytes, *, schema_checked: bool = False) -> Vault:
    """The trial's vault from its key columns read as plain values, on any schema revision.

    For what runs before an ORM row may be read: a login's check of the user row, the
    record of a refusal and ``db upgrade`` on a schema behind this release's.
    ``schema_checked``: the schema is known to be this release's, so the key columns
    exist and the catalogue need not be asked (a login's hot path).
    """
    found = session.execute(select(Trial.id, Trial.wrapped_data_key)).one_or_none()
    if found is None:
        raise StoreError("this database holds no trial: create the trial first", hint=Hint.INIT)
    trial_id, wrapped = str(found[0]), bytes(found[1])
    material = KeyMaterial(KEY_FORMAT_DERIVED, wrapped)
    if schema_checked or _has_key_columns(session):
        key_format, wrapped_audit, wrapped_row = session.execute(
            select(Trial.key_format, Trial.wrapped_audit_key, Trial.wrapped_row_key)
        ).one()
        material = KeyMaterial(key_format, wrapped, wrapped_audit, wrapped_row)
    return open_keys(trial_key, trial_id, material)


def _has_key_columns(session: Session) -> bool:
    columns = {column["name"] for column in inspect(session.connection()).get_columns("trial")}
    return "key_format" in columns


MIGRATED_FROM = "randomizer.context.migrated_from"
"""Session info: the schema revision ``db upgrade`` found, when it migrated in this transaction."""


def _migrate(store: Store, session: Session) -> bool:
    """``db upgrade`` alone: migrate a schema that is behind first, in the action's transaction.

    The rows are read as this release maps them only once the schema is this
    release's; a refused role rolls the migration back with everything else.
    Returns whether the rows may lack MACs (the schema predates them).
    """
    from alembic import command  # only db upgrade migrates: the CLI's start-up skips alembic

    status = store.status(session)
    if status.state != "behind":
        return False
    command.upgrade(stores.alembic_config(session.connection()), "head")
    session.info[MIGRATED_FROM] = status.current
    return status.current is not None and status.current < rows.SINCE_REVISION


def open_vault(trial: Trial, key_file: Path) -> Vault:
    """The trial's vault, opened with the trial key read from ``key_file``."""
    return vault_for(trial, read_key_file(key_file))


MESSAGE_MAX = 2000
"""Longest refusal message a refusal event stores; a longer one is cut."""

LOGIN_REFUSED = "login refused for user {user!r}: unknown user, wrong password or disabled account"


def _login_refused(user: str) -> AuthenticationFailed:
    # the name as typed, of any length, goes into the message and the trail: cut it
    return AuthenticationFailed(LOGIN_REFUSED.format(user=user[: audit.USER_MAX]))


def _check_user_text(name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # undecodable bytes in --user arrive as lone surrogates, which no database stores
        raise InvalidInput("the user name is not valid text: use UTF-8 characters") from None


def authenticate(
    store: Store,
    trial_key: KeySource,
    credentials: Credentials,
    now: datetime,
    *,
    action: str,
    subject: str = "",
    channel: str = "cli",
    client: str = "",
    schema_check: bool = True,
) -> Principal:
    """Check a user's password, before and outside any write transaction.

    The password hash costs about 0.1 s by design; computing it while holding
    the database's write lock would queue every other user behind it. An
    unknown or disabled user costs the same hash (a dummy one), so the time
    taken does not tell whether the account exists. A refusal is recorded as
    ``auth.failed`` and raised as :class:`AuthenticationFailed`, or as
    :class:`DamagedRecord` when the user's stored hash was altered to ask for
    an absurd cost.
    """
    _check_user_text(credentials.user)
    trial_key()  # a key-file problem is reported before the database is touched
    with store.transaction(read_only=True) as session:
        if schema_check:
            store.check_schema(session)
        # also: a database without a trial is told as such
        vault = plain_vault(session, trial_key(), schema_checked=schema_check)
        found = session.execute(
            select(User.name, User.password_hash, User.disabled).where(
                User.name == credentials.user
            )
        ).one_or_none()
        user_row = None
        if schema_check and found is not None:
            # the row as decisions read it: a role, hash or flag set without the key fails
            covered = rows.BY_MODEL[User]
            user_row = session.execute(
                select(*(getattr(User, c) for c in covered.columns), User.row_mac).where(
                    User.name == credentials.user
                )
            ).one()
    stored = found.password_hash if found is not None and not found.disabled else dummy_hash()
    try:
        matches = verify_password(credentials.password, stored)
    except DamagedRecord as exc:
        assert found is not None  # the dummy hash is never damaged
        damaged = DamagedRecord(
            f"login refused for user {found.name!r}: {exc}; an admin can "
            "set a new password with 'randomizer user passwd'"
        )
        record_refusal(
            store,
            trial_key,
            Principal(credentials.user, channel, "", client),
            action,
            subject,
            now,
            damaged,
            "auth.failed",
            "damaged password hash",
        )
        raise damaged from None
    if user_row is not None:
        try:
            rows.check_row(vault, "users", user_row[:-1], user_row[-1])
        except IntegrityFailure as exc:
            record_refusal(
                store,
                trial_key,
                Principal(credentials.user, channel, "", client),
                action,
                subject,
                now,
                exc,
                "auth.failed",
                "integrity",
            )
            raise
    if found is None or found.disabled or not matches:
        why = (
            "unknown user"
            if found is None
            else "disabled user"
            if found.disabled
            else "wrong password"
        )
        refusal = _login_refused(credentials.user)
        record_refusal(
            store,
            trial_key,
            Principal(credentials.user, channel, "", client),
            action,
            subject,
            now,
            refusal,
            "auth.failed",
            why,
        )
        raise refusal
    return Principal(user=found.name, channel=channel, client=client, fresh_login=True)


@contextmanager
def operation(
    store: Store,
    trial_key: KeySource,
    principal: Principal,
    permission: Permission,
    action: str,
    now: datetime,
    subject: str = "",
    schema_check: bool = True,
    signature: SignedBy | None = None,
    check_trial: bool = True,
) -> Iterator[Operation]:
    """Run one user action as ``principal``: authorise, then yield the open transaction.

    A signed action (:data:`randomizer.signatures.MEANINGS`) needs ``signature``, the
    principal's own from :func:`randomizer.logins.sign` for this very action.

    The principal comes from :func:`authenticate` (or a server token); the user
    row is read again inside the transaction, so an account disabled since the
    login is refused. ``action`` and ``subject`` name what is attempted in
    refusal events. ``schema_check=False`` is for ``db upgrade`` alone, which
    runs on an older schema. ``check_trial=False`` is for ``verify`` alone, which
    must run to name a broken trial row (it decides nothing on it).
    """
    _check_user_text(principal.user)
    trial_key()
    refusal: tuple[RandomizerError, str, str] | None = None
    try:
        with store.transaction() as session:
            unsealed_ok = False
            if schema_check:
                store.check_schema(session)
            else:
                unsealed_ok = _migrate(store, session)
            trial = load_trial(session)
            vault = vault_for(trial, trial_key())
            rows.attach(session, vault, unsealed_ok=unsealed_ok)
            audit.lock_head(session)  # first, in every action: one lock order for all writers
            try:
                if check_trial:
                    rows.check_object(session, trial)
                user = session.scalars(_USER_NAMED, {"name": principal.user}).one_or_none()
            except IntegrityFailure as exc:
                refusal = (exc, "refused", "integrity")
                raise
            if user is None or user.disabled:
                why = "unknown user" if user is None else "disabled user"
                refusal = (_login_refused(principal.user), "auth.failed", why)
                raise refusal[0]
            op = Operation(
                session=session,
                trial=trial,
                design=_design(trial.design_toml),
                vault=vault,
                user=user,
                now=now,
                principal=principal,
                signature=signature,
            )
            try:
                op.require(permission)
            except NotAuthorized as exc:
                refusal = (exc, "refused", "role")
                raise
            if is_signed(action) and (
                signature is None or (signature.action, signature.name) != (action, user.name)
            ):
                raise InvalidInput(
                    f"{action} is a signed action: the user re-enters their password to sign it"
                )
            if principal.fresh_login:
                op.audit("auth.login", subject=action)
            try:
                yield op
                session.flush()
                if rows.pending(session):
                    raise RuntimeError(f"{action} wrote rows after its last audit event")
                fault_point(f"{action}:before-commit")
            except RandomizerError as exc:
                if exc.audited:
                    kind = "screen_failure" if isinstance(exc, Ineligible) else "refused"
                    refusal = (exc, kind, type(exc).__name__)
                raise
    except RandomizerError as exc:
        if refusal is not None and refusal[0] is exc:
            record_refusal(store, trial_key, principal, action, subject, now, *refusal)
        raise


def record_refusal(
    store: Store,
    trial_key: KeySource,
    principal: Principal,
    action: str,
    subject: str,
    now: datetime,
    exc: RandomizerError,
    kind: str,
    why: str,
) -> None:
    """Record a refused action in a transaction of its own (after the action's rolled back).

    The user name and subject are whatever was typed; :func:`randomizer.audit.append`
    cuts them to their widths, and the message is cut here to :data:`MESSAGE_MAX`.
    """
    with store.transaction() as session:
        # plain columns, no ORM rows: this runs on a schema 'db upgrade' has yet to bring up
        vault = plain_vault(session, trial_key())
        user = session.execute(
            select(User.name, User.role).where(User.name == principal.user)
        ).one_or_none()
        name = principal.user if user is None else user.name
        role = "" if user is None else user.role
        details = {
            **(exc.audit_details or {}),
            "command": action,
            "refusal": why,
            "message": str(exc)[:MESSAGE_MAX],
        }
        audit.append(
            session,
            vault.audit_key(),
            now=now,
            user=name,
            role=role,
            action=kind,
            subject=subject,
            details=_with_via(details, principal),
        )
