"""Logins to the trial server: password once, then a bearer token; throttled and audited.

The server calls these and nothing else for identity. A login checks the
throttle, then the password (outside any write transaction, see
:func:`randomizer.context.authenticate`), then issues a token whose SHA-256
alone is stored (:mod:`randomizer.sessions`). Each later request presents the
token and becomes a :class:`~randomizer.context.Principal`; no password hash is
computed per request.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select

from randomizer import audit
from randomizer.access import (
    MAX_PASSWORD_LENGTH,
    Permission,
    check_user_name,
    dummy_hash,
    verify_password,
)
from randomizer.context import (
    Credentials,
    KeySource,
    Operation,
    Principal,
    authenticate,
    load_trial,
    operation,
    record_refusal,
    vault_for,
)
from randomizer.errors import AuthenticationFailed, DamagedRecord, InvalidInput, TooManyAttempts
from randomizer.models import User
from randomizer.results import LoginUnlock as LoginUnlock
from randomizer.sessions import (
    ABSOLUTE_TIMEOUT,
    IDLE_TIMEOUT,
    IssuedToken,
    check_throttle,
    check_token,
    issue_token,
    lift_lock,
    record_failure,
    record_success,
    resolve_token,
    revoke_token,
)
from randomizer.signatures import Signature, SignedBy, meaning_of
from randomizer.store import Store

SERVER_USER = "(server)"
"""The name server start and stop events are recorded under (no user can have it)."""

MAX_CLIENT = 128
"""The longest client address an admin can name when lifting a lock."""


def login(
    store: Store,
    trial_key: KeySource,
    credentials: Credentials,
    now: datetime,
    *,
    kind: str = "api",
    client: str = "",
    idle: timedelta = IDLE_TIMEOUT,
    absolute: timedelta = ABSOLUTE_TIMEOUT,
) -> IssuedToken:
    """Check a password and issue a token of ``kind`` ("api" or "web").

    Refused logins are recorded (``auth.failed``) and counted per user and per
    client address; past the limit a login is refused before its password is
    checked, with :class:`~randomizer.errors.TooManyAttempts`.
    """
    principal = Principal(credentials.user, kind, "", client)
    try:
        with store.transaction() as session:
            check_throttle(session, credentials.user, client, now)
    except TooManyAttempts as exc:
        record_refusal(
            store, trial_key, principal, "login", "", now, exc, "auth.failed", "throttled"
        )
        raise
    try:
        principal = authenticate(
            store, trial_key, credentials, now, action="login", channel=kind, client=client
        )
    except AuthenticationFailed:
        with store.transaction() as session:
            record_failure(session, credentials.user, client, now)
        raise
    with operation(
        store, trial_key, replace(principal, fresh_login=False), Permission.LOG_IN, "login", now
    ) as op:
        record_success(op.session, principal.user, client)
        issued = issue_token(
            op.session, principal.user, kind, now, client, idle=idle, absolute=absolute
        )
        op.principal = replace(op.principal, session=issued.token_id)
        op.audit(
            "auth.login", subject=kind, details={"expires_at": audit.utc_text(issued.expires_at)}
        )
    return issued


SIGNATURE_REFUSED = (
    "signature refused for user {user!r}: wrong password or disabled account; nothing was done"
)


_HASH_OF = select(User.password_hash, User.disabled).where(User.name == bindparam("name"))


def sign(
    store: Store,
    trial_key: KeySource,
    principal: Principal,
    signature: Signature,
    action: str,
    subject: str,
    now: datetime,
) -> SignedBy:
    """Check an electronic signature: the principal's password, re-entered for ``action``.

    Outside any write transaction, as a login's check. The meaning must be the
    action's own (:data:`randomizer.signatures.MEANINGS`), else the signer was shown
    something else: malformed input. A wrong password is refused with
    :class:`AuthenticationFailed`, recorded as ``signature.failed`` and counted
    towards the login throttle of the user name and client; while that throttle
    holds, a signature is refused before its password is checked.
    """
    meaning = meaning_of(action)
    if signature.meaning != meaning:
        raise InvalidInput(f"the signature's meaning is not this action's: sign {meaning!r}")
    if len(signature.password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")
    try:
        # one read-only transaction: the throttle only reads, and a write transaction
        # here would queue every signature for the one write lock
        with store.transaction(read_only=True) as session:
            check_throttle(session, principal.user, principal.client, now)
            store.check_schema(session)
            found = session.connection().execute(_HASH_OF, {"name": principal.user}).one_or_none()
    except TooManyAttempts as exc:
        record_refusal(
            store, trial_key, principal, action, subject, now, exc, "signature.failed", "throttled"
        )
        raise
    stored = found.password_hash if found is not None and not found.disabled else dummy_hash()
    try:
        matches = verify_password(signature.password, stored)
    except DamagedRecord:
        matches = False  # an altered hash signs nothing; the login already said why
    if found is None or found.disabled or not matches:
        refusal = AuthenticationFailed(SIGNATURE_REFUSED.format(user=principal.user))
        with store.transaction() as session:
            record_failure(session, principal.user, principal.client, now)
        record_refusal(
            store,
            trial_key,
            principal,
            action,
            subject,
            now,
            refusal,
            "signature.failed",
            "wrong password" if found is not None and not found.disabled else "no such user",
        )
        raise refusal
    return SignedBy(name=principal.user, at=audit.utc_text(now), meaning=meaning, action=action)


def principal_for(store: Store, token: str, now: datetime, client: str = "") -> Principal:
    """The principal of a live token; any other token is refused with one message.

    Every request runs this before its operation, so it only reads: on SQLite
    a write transaction here would queue each request twice for the one write
    lock. The token's last use is written in a transaction of its own only
    when it is due (:func:`~randomizer.sessions.check_token`).
    """
    with store.transaction(read_only=True) as session:
        info, due = check_token(session, token, now)
    if due:
        with store.transaction() as session:
            info = resolve_token(session, token, now)
    return Principal(info.user_name, info.kind, info.token_id, client)


def logout(store: Store, trial_key: KeySource, principal: Principal, now: datetime) -> None:
    """Revoke the principal's token, recorded as ``auth.logout``."""
    with operation(store, trial_key, principal, Permission.LOG_IN, "logout", now) as op:
        revoke_token(op.session, principal.session, now, "logout")
        op.audit("auth.logout", subject=principal.channel)


def lift_login_lock(op: Operation, name: str, client: str | None = None) -> LoginUnlock:
    """Clear the failed logins and any lock of user name ``name`` (and of ``client``), for an admin.

    Failures are counted per user name as typed, whether or not it has an
    account, so this neither needs nor says whether the user exists. A user
    who locked themselves out also locked their own address: name it in
    ``client`` to lift both. Recorded as ``user.unlock`` whatever it cleared.
    """
    check_user_name(name)
    if client is not None and (not client or len(client) > MAX_CLIENT or not client.isprintable()):
        raise InvalidInput(
            f"client address {client[:MAX_CLIENT]!r} is not valid: give the "
            f"address as the server saw it, at most {MAX_CLIENT} characters"
        )
    lifted = lift_lock(op.session, name, client)
    op.audit("user.unlock", subject=name, details={"client": client, "lifted": lifted})
    return LoginUnlock(user=name, client=client, lifted=lifted)


def design_toml(store: Store) -> str:
    """The trial's design text (public: arms, criteria and visits, no allocation)."""
    with store.transaction(read_only=True) as session:
        store.check_schema(session)
        return load_trial(session).design_toml


def record_server_event(
    store: Store, trial_key: KeySource, now: datetime, action: str, details: dict[str, Any]
) -> None:
    """Record a server start or stop in the trail."""
    with store.transaction() as session:
        vault = vault_for(load_trial(session), trial_key())
        audit.append(
            session,
            vault.audit_key(),
            now=now,
            user=SERVER_USER,
            role="",
            action=action,
            details=details,
        )


def user_role(store: Store, name: str) -> str:
    """The role of user ``name`` ("" if there is no such user), for a page's navigation only.

    It grants nothing: every operation checks the role again behind the Backend.
    """
    with store.transaction(read_only=True) as session:
        role = session.scalar(select(User.role).where(User.name == name))
    return role or ""
