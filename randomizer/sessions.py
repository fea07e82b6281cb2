"""Logins after the password check: API tokens, web sessions and failed-login throttling.

A login gives the user a secret token: 32 random bytes, url-safe base64
(43 characters), shown once. The database keeps only its SHA-256, so a copy
of the database opens no login, and a public ``token_id`` (16 hexadecimal
digits) that audit records and logs name instead of the token. A token dies
after ``idle`` without use or ``absolute`` after issue, whichever comes
first, or when revoked (logout, the user disabled, a new password).
The server checks a token on every request with :func:`check_token`, which
only reads, and writes the token's last use again (:func:`resolve_token`)
only once the recorded one is :func:`use_interval` old: so a token may end
up to that much before its idle time is up, never after it.

Failed logins are counted per user name and per client address, whether or
not the user exists, so that neither the counting nor the refusal tells who
has an account. Past :data:`BACKOFF_AFTER` failures a key waits an
exponentially growing delay before the next attempt; at :data:`LOCK_AFTER`
it is locked for :data:`LOCK_DURATION`, until then or until an admin lifts
the lock.

Every function here works inside the caller's transaction and neither
commits nor audits: the caller records the event (``auth.login``,
``auth.logout``, a lift) in the same transaction. Rows are never deleted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Row, Table, Update, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from randomizer.errors import AuthenticationFailed, InvalidInput, TooManyAttempts
from randomizer.models import AuthToken, LoginFailure, User

TOKEN_KINDS = ("api", "web")
"""``api``: a bearer token of the remote CLI; ``web``: the session behind a page cookie."""

TOKEN_BYTES = 32
"""Random bytes in a token (256 bits: guessing one is hopeless, so an unsalted hash will do)."""

IDLE_TIMEOUT = timedelta(minutes=30)
"""Default: a token not used for this long is refused (each use restarts the wait)."""

ABSOLUTE_TIMEOUT = timedelta(hours=12)
"""Default: a token is refused this long after issue, however often it is used."""

USE_RECORDED_EVERY = timedelta(minutes=1)
"""How often a token's use is written at most (a tenth of its idle time if that is shorter)."""

INVALID_TOKEN = "the login is not valid or has expired: log in again"
"""The one refusal of every unusable token: it never says which check failed."""

BACKOFF_AFTER = 3
"""Failed logins under one key allowed without delay; each later one doubles the wait."""

BACKOFF_BASE = timedelta(seconds=1)
"""The wait after failure number BACKOFF_AFTER; failure n waits 2 ** (n - BACKOFF_AFTER) x this."""

BACKOFF_CAP = timedelta(minutes=15)
"""The longest back-off wait."""

LOCK_AFTER = 10
"""Failed logins under one key that lock it; every further failure locks it again."""

LOCK_DURATION = timedelta(minutes=30)
"""How long a lock lasts unless an admin lifts it."""

FORGET_AFTER = timedelta(hours=24)
"""A key without a failure for this long (and not locked) starts counting from zero again."""

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
# Keys stay readable ("user:alice", "client:10.0.0.7") for every name that can be
# a user and every ordinary address; anything else (too long, control characters,
# NUL, which PostgreSQL cannot store) is counted under its SHA-256 instead. '#'
# never appears in a readable value, so the two forms cannot collide.
_READABLE_KEY = re.compile(r"[A-Za-z0-9._:\[\]%@-]{1,64}")
_MAX_CLIENT = 128


@dataclass(frozen=True)
class IssuedToken:
    """A new login: the secret token (to hand to the user once) and its public id."""

    token: str = field(repr=False)
    token_id: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenInfo:
    """Who a valid token belongs to."""

    token_id: str
    user_name: str
    kind: str
    expires_at: datetime


def issue_token(
    session: Session,
    user_name: str,
    kind: str,
    now: datetime,
    client: str,
    idle: timedelta = IDLE_TIMEOUT,
    absolute: timedelta = ABSOLUTE_TIMEOUT,
) -> IssuedToken:
    """Store a new token for ``user_name`` (already authenticated) and return it.

    ``client`` is the address the login came from. Only the token's hash is stored.
    """
    if kind not in TOKEN_KINDS:
        raise InvalidInput(f"token kind must be one of {', '.join(TOKEN_KINDS)}, not {kind!r}")
    if idle <= timedelta(0) or absolute <= timedelta(0):
        raise InvalidInput("token lifetimes must be positive")
    if len(client) > _MAX_CLIENT or not client.isprintable():
        raise InvalidInput(f"the client address must be at most {_MAX_CLIENT} printable characters")
    disabled = session.scalar(select(User.disabled).where(User.name == user_name))
    if disabled is None or disabled:
        raise AuthenticationFailed(
            f"no login for user {user_name!r}: unknown user or disabled account"
        )
    raw = secrets.token_bytes(TOKEN_BYTES)
    row = AuthToken(
        token_id=secrets.token_hex(8),
        token_hash=hashlib.sha256(raw).hexdigest(),
        user_name=user_name,
        kind=kind,
        created_at=now,
        last_used_at=now,
        expires_at=now + absolute,
        idle_seconds=math.ceil(idle.total_seconds()),
        client=client,
    )
    session.add(row)
    session.flush()
    return IssuedToken(token=_encode(raw), token_id=row.token_id, expires_at=row.expires_at)


def resolve_token(
    session: Session, token: str, now: datetime, kind: str | None = None
) -> TokenInfo:
    """The login ``token`` stands for, its idle time restarted; refuses any unusable token.

    Unknown, malformed, revoked, expired (idle or absolute), of another
    ``kind`` when one is asked for, or of a disabled user: all raise
    :class:`AuthenticationFailed` with the one message :data:`INVALID_TOKEN`.
    """
    row = _usable_row(session, token, now, kind)
    row.last_used_at = max(row.last_used_at, now)
    return _info(row)


def check_token(
    session: Session, token: str, now: datetime, kind: str | None = None
) -> tuple[TokenInfo, bool]:
    """The login ``token`` stands for, read only; and whether its use is due to be written.

    Refuses exactly as :func:`resolve_token` does and writes nothing, so a
    read-only transaction will do. The use is due once the recorded last use
    is :func:`use_interval` old: then restart the idle time with
    :func:`resolve_token` in a write transaction.
    """
    row = _usable_row(session, token, now, kind)
    return _info(row), now - row.last_used_at >= use_interval(row.idle_seconds)


def use_interval(idle_seconds: int) -> timedelta:
    """How old a token's recorded use may get before a check writes it again.

    :data:`USE_RECORDED_EVERY`, or a tenth of the idle time if that is
    shorter: a use goes unwritten only if one less than this long before it
    was written, so a token ends at most this much before its idle time is up.
    """
    return min(USE_RECORDED_EVERY, timedelta(seconds=idle_seconds) / 10)


def _usable_row(session: Session, token: str, now: datetime, kind: str | None) -> AuthToken:
    digest = _digest(token)
    found = None
    if digest is not None:
        found = session.execute(
            select(AuthToken, User.disabled)
            .join(User, User.name == AuthToken.user_name)
            .where(AuthToken.token_hash == digest)
        ).one_or_none()
    if found is None or digest is None:
        raise AuthenticationFailed(INVALID_TOKEN)
    row, disabled = found
    usable = (
        hmac.compare_digest(row.token_hash, digest)
        and not disabled
        and row.revoked_at is None
        and now < row.expires_at
        and now < row.last_used_at + timedelta(seconds=row.idle_seconds)
        and (kind is None or row.kind == kind)
    )
    if not usable:
        raise AuthenticationFailed(INVALID_TOKEN)
    return row


def _info(row: AuthToken) -> TokenInfo:
    return TokenInfo(
        token_id=row.token_id, user_name=row.user_name, kind=row.kind, expires_at=row.expires_at
    )


def revoke_token(session: Session, token_id_or_token: str, now: datetime, reason: str) -> bool:
    """Revoke one token, named by its public id or by the token itself (logout).

    True if it was revoked now; False if it is unknown or was revoked before.
    """
    if _TOKEN_ID.fullmatch(token_id_or_token):
        where = AuthToken.token_id == token_id_or_token
    else:
        digest = _digest(token_id_or_token)
        if digest is None:
            # never echo the value: it may be a mistyped secret
            raise InvalidInput("not a token id (16 hexadecimal digits) nor a login token")
        where = AuthToken.token_hash == digest
    row = session.scalars(select(AuthToken).where(where)).one_or_none()
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = now
    row.revoked_reason = reason
    return True


def revoke_user_tokens(session: Session, user_name: str, now: datetime, reason: str) -> int:
    """Revoke every token of ``user_name`` not revoked yet; how many were."""
    return _update(
        session,
        update(AuthToken)
        .where(AuthToken.user_name == user_name, AuthToken.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason),
    )


def user_key(user_name: str) -> str:
    """The throttle key of a user name as typed (the user need not exist)."""
    return _key("user", user_name)


def client_key(client: str) -> str:
    """The throttle key of a client address."""
    return _key("client", client)


_FAILURE_COUNTERS = cast(Table, LoginFailure.__table__)
# built once: every login and signature runs it
_FAILURES_OF = select(
    _FAILURE_COUNTERS.c.failures,
    _FAILURE_COUNTERS.c.last_failure_at,
    _FAILURE_COUNTERS.c.locked_until,
).where(_FAILURE_COUNTERS.c.key.in_([bindparam("user"), bindparam("client")]))


def check_throttle(session: Session, user_name: str, client: str, now: datetime) -> None:
    """Refuse with :class:`TooManyAttempts` while the user name or the client waits or is locked.

    Call before the password is checked, and do not count a refusal from here
    as a failure: the password was never tried.
    """
    found = session.connection().execute(
        _FAILURES_OF, {"user": user_key(user_name), "client": client_key(client)}
    )
    waits = [_wait(row, now) for row in found]
    locked = any(row_locked for _, row_locked in waits)
    wait = max((w for w, _ in waits), default=timedelta(0))
    if wait <= timedelta(0):
        return
    seconds = math.ceil(wait.total_seconds())
    if locked:
        raise TooManyAttempts(
            "logins for this user name or from this address are locked after too many "
            f"failed attempts: try again in {math.ceil(seconds / 60)} min, or ask an admin "
            "to lift the lock",
            retry_after=seconds,
        )
    raise TooManyAttempts(
        f"too many failed logins for this user name or from this address: try again in {seconds} s",
        retry_after=seconds,
    )


def record_failure(session: Session, user_name: str, client: str, now: datetime) -> bool:
    """Count a failed password check against the user name and the client.

    Call it for an unknown user too, and in a transaction that commits
    although the login failed. True if this failure locked either key.
    """
    locked = False
    # one order everywhere, so two concurrent failures never wait on each other's row
    for key in sorted({user_key(user_name), client_key(client)}):
        row = _locked_row(session, key, now)
        if row.failures and now - row.last_failure_at >= FORGET_AFTER and not _is_locked(row, now):
            row.failures = 0
        row.failures += 1
        row.last_failure_at = max(row.last_failure_at, now)
        if row.failures >= LOCK_AFTER:
            row.locked_until = now + LOCK_DURATION
            locked = True
    return locked


def record_success(session: Session, user_name: str, client: str) -> None:
    """Clear the failures of the user name and the client after a good password."""
    _clear(session, [user_key(user_name), client_key(client)])


def lift_lock(session: Session, user_name: str, client: str | None = None) -> bool:
    """Clear the failures and any lock of a user name (and of ``client`` if given), for an admin.

    True if there was anything to clear.
    """
    keys = [user_key(user_name)] + ([] if client is None else [client_key(client)])
    return _clear(session, keys) > 0


def backoff(failures: int) -> timedelta:
    """The wait after ``failures`` failed logins under one key (locks apart)."""
    if failures < BACKOFF_AFTER:
        return timedelta(0)
    # the exponent is bounded so that a huge count cannot overflow timedelta
    doublings = min(failures - BACKOFF_AFTER, 32)
    wait: timedelta = BACKOFF_BASE * 2**doublings
    return min(wait, BACKOFF_CAP)


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _digest(token: str) -> str | None:
    """The stored hash of a well-formed token, or None for anything else."""
    if not _TOKEN.fullmatch(token):
        return None
    raw = base64.urlsafe_b64decode(token + "=")
    if _encode(raw) != token:
        return None  # the unused low bits of the last character are set: not one we issued
    return hashlib.sha256(raw).hexdigest()


def _key(prefix: str, value: str) -> str:
    if _READABLE_KEY.fullmatch(value):
        return f"{prefix}:{value}"
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}#{digest}"


def _is_locked(row: LoginFailure | Row[Any, Any, Any], now: datetime) -> bool:
    return row.locked_until is not None and now < row.locked_until


def _wait(row: LoginFailure | Row[Any, Any, Any], now: datetime) -> tuple[timedelta, bool]:
    """How long the key must still wait, and whether that is a lock."""
    if row.locked_until is not None and now < row.locked_until:
        return row.locked_until - now, True
    return row.last_failure_at + backoff(row.failures) - now, False


def _locked_row(session: Session, key: str, now: datetime) -> LoginFailure:
    """The counter row of ``key``, created if missing, locked until the transaction ends."""
    dialect = session.get_bind().dialect.name
    values = {"key": key, "failures": 0, "last_failure_at": now, "locked_until": None}
    # two first failures at once must not both insert: let the database settle it
    if dialect == "sqlite":
        session.execute(
            sqlite.insert(LoginFailure)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["key"])
        )
    elif dialect == "postgresql":
        session.execute(
            postgresql.insert(LoginFailure)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["key"])
        )
    elif session.scalars(select(LoginFailure.id).where(LoginFailure.key == key)).first() is None:
        session.add(LoginFailure(**values))
        session.flush()
    return session.scalars(
        select(LoginFailure)
        .where(LoginFailure.key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def _clear(session: Session, keys: list[str]) -> int:
    return _update(
        session,
        update(LoginFailure)
        .where(
            LoginFailure.key.in_(keys),
            (LoginFailure.failures > 0) | LoginFailure.locked_until.is_not(None),
        )
        .values(failures=0, locked_until=None),
    )


def _update(session: Session, statement: Update) -> int:
    """Run a bulk UPDATE, keeping objects already loaded in ``session`` in step; rows hit."""
    result = session.execute(statement.execution_options(synchronize_session="fetch"))
    return int(cast(CursorResult[Any], result).rowcount)
