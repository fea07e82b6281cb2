"""Logins after the password check: tokens, their expiry and revocation, and throttling.

Everything runs on a real database (SQLite, or PostgreSQL with
RANDOMIZER_TEST_DB) holding the trial's users, through ``Store`` transactions;
time is injected, never waited for.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select

from randomizer import logins, sessions
from randomizer import store as store_module
from randomizer.context import Principal
from randomizer.errors import AuthenticationFailed, Busy, InvalidInput, TooManyAttempts
from randomizer.models import AuthToken
from randomizer.sessions import (
    INVALID_TOKEN,
    IssuedToken,
    TokenInfo,
    backoff,
    check_throttle,
    check_token,
    issue_token,
    lift_lock,
    record_failure,
    record_success,
    resolve_token,
    revoke_token,
    revoke_user_tokens,
)
from randomizer.store import Store
from tests.support.database import dump_database, execute
from tests.support.trial import ADMIN, Run, TrialFiles

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CLIENT = "192.0.2.10"
SECOND = timedelta(seconds=1)


@pytest.fixture
def store(trial_with_users: TrialFiles) -> Iterator[Store]:
    """The trial with one user per role, opened as the server would."""
    database = Store(trial_with_users.db_url)
    try:
        yield database
    finally:
        database.dispose()


def _issue(
    store: Store, user: str = "ivan", kind: str = "api", now: datetime = T0, **lifetimes: timedelta
) -> IssuedToken:
    with store.transaction() as session:
        return issue_token(session, user, kind, now, CLIENT, **lifetimes)


def _resolve(store: Store, token: str, now: datetime, kind: str | None = None) -> TokenInfo:
    with store.transaction() as session:
        return resolve_token(session, token, now, kind=kind)


def _refused(store: Store, token: str, now: datetime, kind: str | None = None) -> None:
    """The token is refused with the one message that names no reason."""
    with pytest.raises(AuthenticationFailed) as caught:
        _resolve(store, token, now, kind)
    assert type(caught.value) is AuthenticationFailed
    assert str(caught.value) == INVALID_TOKEN


def _token_rows(db_url: str) -> dict[str, tuple[str, object, str | None]]:
    """token_id -> (user, revoked_at, revoked_reason), read straight from the table."""
    rows = execute(
        db_url, "SELECT token_id, user_name, revoked_at, revoked_reason FROM auth_tokens"
    )
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


# tokens --------------------------------------------------------------------------------


def test_a_token_round_trip(store: Store) -> None:
    issued = _issue(store, "ivan", "api")
    assert len(issued.token) == 43
    assert len(base64.urlsafe_b64decode(issued.token + "=")) == 32
    assert len(issued.token_id) == 16 and int(issued.token_id, 16) >= 0
    assert issued.expires_at == T0 + timedelta(hours=12)
    assert issued.token not in repr(issued)
    info = _resolve(store, issued.token, T0 + timedelta(minutes=1))
    assert info == TokenInfo(
        token_id=issued.token_id, user_name="ivan", kind="api", expires_at=T0 + timedelta(hours=12)
    )
    web = _issue(store, "mona", "web", absolute=timedelta(hours=1))
    assert _resolve(store, web.token, T0, kind="web") == TokenInfo(
        token_id=web.token_id, user_name="mona", kind="web", expires_at=T0 + timedelta(hours=1)
    )


def test_each_token_is_new(store: Store) -> None:
    first, second = _issue(store), _issue(store)
    assert first.token != second.token
    assert first.token_id != second.token_id


def test_only_the_hash_of_a_token_is_stored(store: Store, trial_with_users: TrialFiles) -> None:
    issued = _issue(store, "stan", "web")
    _resolve(store, issued.token, T0 + SECOND)
    raw = base64.urlsafe_b64decode(issued.token + "=")
    dump = dump_database(trial_with_users.db_url)
    text = repr(dump)
    assert issued.token not in text
    assert raw.hex() not in text
    assert base64.b64encode(raw).decode().rstrip("=")[:40] not in text
    assert not any(
        raw in value
        for rows in dump.values()
        for row in rows
        for value in row
        if isinstance(value, bytes)
    )
    [row] = execute(
        trial_with_users.db_url,
        "SELECT token_id, token_hash, user_name, kind, client FROM auth_tokens",
    )
    assert row == (issued.token_id, hashlib.sha256(raw).hexdigest(), "stan", "web", CLIENT)


def test_the_idle_expiry_slides_with_each_use(store: Store) -> None:
    issued = _issue(store, idle=timedelta(minutes=30))
    used = T0
    for _ in range(4):  # each use within 30 minutes of the last keeps it alive
        used += timedelta(minutes=29)
        _resolve(store, issued.token, used)
    _resolve(store, issued.token, used + timedelta(minutes=30) - SECOND)
    used += timedelta(minutes=30) - SECOND
    _refused(store, issued.token, used + timedelta(minutes=30))
    _refused(store, issued.token, used + timedelta(hours=1))


def test_an_unused_token_dies_after_its_idle_time(store: Store) -> None:
    issued = _issue(store, idle=timedelta(minutes=5))
    _refused(store, issued.token, T0 + timedelta(minutes=5))


def test_the_absolute_expiry_holds_however_often_a_token_is_used(store: Store) -> None:
    issued = _issue(store, idle=timedelta(minutes=30), absolute=timedelta(hours=2))
    used = T0
    while used + timedelta(minutes=20) < T0 + timedelta(hours=2):
        used += timedelta(minutes=20)
        _resolve(store, issued.token, used)
    _resolve(store, issued.token, T0 + timedelta(hours=2) - SECOND)
    _refused(store, issued.token, T0 + timedelta(hours=2))
    _refused(store, issued.token, T0 + timedelta(hours=2, minutes=1))


# the check of every server request -------------------------------------------------------


def _last_used(store: Store, token_id: str) -> datetime:
    with store.transaction(read_only=True) as session:
        return session.scalars(
            select(AuthToken.last_used_at).where(AuthToken.token_id == token_id)
        ).one()


def _principal(store: Store, token: str, now: datetime) -> Principal:
    return logins.principal_for(store, token, now, client=CLIENT)


@pytest.mark.parametrize(
    ("idle", "interval"),
    [
        (timedelta(minutes=30), timedelta(minutes=1)),
        (timedelta(minutes=5), timedelta(seconds=30)),
        (timedelta(minutes=1), timedelta(seconds=6)),
    ],
)
def test_a_check_writes_the_use_only_once_it_is_an_interval_old(
    store: Store, idle: timedelta, interval: timedelta
) -> None:
    assert sessions.use_interval(math.ceil(idle.total_seconds())) == interval
    issued = _issue(store, idle=idle)
    for now in (T0, T0 + interval / 2, T0 + interval - SECOND):
        assert _principal(store, issued.token, now) == Principal(
            "ivan", "api", issued.token_id, CLIENT
        )
        assert _last_used(store, issued.token_id) == T0
    _principal(store, issued.token, T0 + interval)
    assert _last_used(store, issued.token_id) == T0 + interval


def test_a_check_that_writes_nothing_changes_nothing(
    store: Store, trial_with_users: TrialFiles
) -> None:
    issued = _issue(store)
    before = dump_database(trial_with_users.db_url)
    _principal(store, issued.token, T0 + 59 * SECOND)
    assert dump_database(trial_with_users.db_url) == before


@pytest.mark.parametrize("idle", [timedelta(minutes=1), timedelta(minutes=30)])
def test_a_token_used_within_its_idle_time_less_one_interval_stays_alive(
    store: Store, idle: timedelta
) -> None:
    gap = idle - sessions.use_interval(math.ceil(idle.total_seconds()))
    issued = _issue(store, idle=idle, absolute=timedelta(hours=12))
    used = T0
    for _ in range(12):
        used += gap - SECOND
        _principal(store, issued.token, used)
    for step in (SECOND, 2 * SECOND, gap - SECOND):  # uses closer together too
        used += step
        _principal(store, issued.token, used)


def test_a_token_ends_at_most_one_interval_before_its_idle_time(store: Store) -> None:
    """The unwritten use at 0:59 does not restart the idle time: the token ends at 30:00
    where resolve_token (writing every use) would keep it until 30:59."""
    kept, ended = (
        _issue(store, idle=timedelta(minutes=30)),
        _issue(store, idle=timedelta(minutes=30)),
    )
    for issued in (kept, ended):
        _principal(store, issued.token, T0 + 59 * SECOND)
    _principal(store, kept.token, T0 + timedelta(minutes=30) - SECOND)
    for now in (T0 + timedelta(minutes=30), T0 + timedelta(minutes=30, seconds=58)):
        with pytest.raises(AuthenticationFailed, match=f"^{INVALID_TOKEN}$"):
            _principal(store, ended.token, now)


def test_a_check_refuses_every_token_that_resolve_refuses(store: Store) -> None:
    expired, revoked = _issue(store, idle=timedelta(minutes=1)), _issue(store)
    with store.transaction() as session:
        revoke_token(session, revoked.token_id, T0, "logout")
    for token, now in (
        (expired.token, T0 + timedelta(minutes=1)),
        (revoked.token, T0),
        (_issue(store).token, T0 + timedelta(hours=12)),
        (secrets.token_urlsafe(32), T0),
        ("garbage", T0),
    ):
        with pytest.raises(AuthenticationFailed) as caught:
            _principal(store, token, now)
        assert type(caught.value) is AuthenticationFailed
        assert str(caught.value) == INVALID_TOKEN
        with (
            store.transaction(read_only=True) as session,
            pytest.raises(AuthenticationFailed, match=f"^{INVALID_TOKEN}$"),
        ):
            check_token(session, token, now)


@contextmanager
def _token_row_locked(db_url: str, token_id: str) -> Iterator[None]:
    """Another connection holds a write lock on the token's row until the block ends:
    the whole database on SQLite (BEGIN IMMEDIATE), the row on PostgreSQL (FOR UPDATE)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.connection.driver_connection.isolation_level = None  # type: ignore[union-attr]
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(
                    select(AuthToken.id).where(AuthToken.token_id == token_id).with_for_update()
                )
            try:
                yield
            finally:
                conn.rollback()
    finally:
        engine.dispose()


def test_a_check_takes_no_write_lock_until_the_use_is_due(
    trial_with_users: TrialFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a writer holds the token's row, a check that is not due goes through; a due
    one waits for the lock (and here, with a short lock timeout, gives up as busy)."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 300)
    database = Store(trial_with_users.db_url)
    try:
        issued = _issue(database)
        with _token_row_locked(trial_with_users.db_url, issued.token_id):
            assert _principal(database, issued.token, T0 + 30 * SECOND).user == "ivan"
            with pytest.raises(Busy):
                _principal(database, issued.token, T0 + 61 * SECOND)
        assert _last_used(database, issued.token_id) == T0
        _principal(database, issued.token, T0 + 61 * SECOND)
        assert _last_used(database, issued.token_id) == T0 + 61 * SECOND
    finally:
        database.dispose()


def test_a_revoked_token_is_refused(store: Store, trial_with_users: TrialFiles) -> None:
    by_id, by_token, other = _issue(store), _issue(store), _issue(store)
    with store.transaction() as session:
        assert revoke_token(session, by_id.token_id, T0 + SECOND, "revoked by an admin")
        assert revoke_token(session, by_token.token, T0 + SECOND, "logout")
    with store.transaction() as session:  # a second revocation changes nothing
        assert not revoke_token(session, by_id.token_id, T0 + 2 * SECOND, "again")
        assert not revoke_token(session, secrets.token_hex(8), T0, "unknown id")
    _refused(store, by_id.token, T0 + 2 * SECOND)
    _refused(store, by_token.token, T0 + 2 * SECOND)
    _resolve(store, other.token, T0 + 2 * SECOND)
    rows = _token_rows(trial_with_users.db_url)
    assert rows[by_id.token_id][2] == "revoked by an admin"
    assert rows[by_token.token_id][2] == "logout"
    assert rows[other.token_id][1:] == (None, None)


@pytest.mark.parametrize(
    "value", ["", "abc", "0123456789abcdeg", "0123456789ABCDEF", "x" * 42, "x" * 44]
)
def test_revoking_something_that_is_neither_id_nor_token(store: Store, value: str) -> None:
    with store.transaction() as session, pytest.raises(InvalidInput) as caught:
        revoke_token(session, value, T0, "logout")
    assert str(caught.value) == "not a token id (16 hexadecimal digits) nor a login token"


def test_a_token_of_another_kind_is_refused_when_a_kind_is_asked(store: Store) -> None:
    api = _issue(store, kind="api")
    _refused(store, api.token, T0, kind="web")
    assert _resolve(store, api.token, T0, kind="api").kind == "api"


def test_disable_and_passwd_revoke_every_token_of_that_user_only(
    store: Store, trial_with_users: TrialFiles, run: Run
) -> None:
    mona = [_issue(store, "mona", "api"), _issue(store, "mona", "web")]
    ivan = [_issue(store, "ivan", "api"), _issue(store, "ivan", "web")]
    stan = _issue(store, "stan", "web")

    run.ok("user", "disable", "mona", "--reason", "left the study", user=ADMIN)
    for issued in mona:
        _refused(store, issued.token, T0 + SECOND)
    for issued in [*ivan, stan]:
        _resolve(store, issued.token, T0 + SECOND)

    run.ok("user", "passwd", "--password-stdin", user="ivan", input="pw-new-ivan-123456\n")
    for issued in [*mona, *ivan]:
        _refused(store, issued.token, T0 + 2 * SECOND)
    _resolve(store, stan.token, T0 + 2 * SECOND)

    rows = _token_rows(trial_with_users.db_url)
    assert {rows[t.token_id][2] for t in mona} == {"user disabled"}
    assert {rows[t.token_id][2] for t in ivan} == {"password changed"}
    assert rows[stan.token_id][1:] == (None, None)


def test_an_admin_changing_a_password_revokes_that_users_tokens(store: Store, run: Run) -> None:
    petra, alice = _issue(store, "petra"), _issue(store, ADMIN)
    run.ok("user", "passwd", "petra", "--password-stdin", user=ADMIN, input="pw-new-petra-123456\n")
    _refused(store, petra.token, T0)
    _resolve(store, alice.token, T0)


def test_revoke_user_tokens_counts_only_live_revocations(store: Store) -> None:
    first, _ = _issue(store, "petra"), _issue(store, "petra")
    _issue(store, "stan")
    with store.transaction() as session:
        assert revoke_token(session, first.token_id, T0, "logout")
        assert revoke_user_tokens(session, "petra", T0, "user disabled") == 1
        assert revoke_user_tokens(session, "petra", T0, "user disabled") == 0
        assert revoke_user_tokens(session, "nobody", T0, "user disabled") == 0


def test_a_token_of_a_disabled_user_is_refused_even_if_not_revoked(
    store: Store, trial_with_users: TrialFiles
) -> None:
    issued = _issue(store, "mona")
    execute(
        trial_with_users.db_url, "UPDATE users SET disabled = :yes WHERE name = 'mona'", yes=True
    )
    _refused(store, issued.token, T0)


@pytest.mark.parametrize("user", ["nobody", "mona"])
def test_no_token_for_an_unknown_or_disabled_user(
    store: Store, trial_with_users: TrialFiles, user: str
) -> None:
    execute(
        trial_with_users.db_url, "UPDATE users SET disabled = :yes WHERE name = 'mona'", yes=True
    )
    with pytest.raises(AuthenticationFailed) as caught:
        _issue(store, user)
    assert str(caught.value) == (f"no login for user {user!r}: unknown user or disabled account")
    assert execute(trial_with_users.db_url, "SELECT count(*) FROM auth_tokens") == [(0,)]


@pytest.mark.parametrize(
    "kind, client, lifetimes, message",
    [
        ("cli", CLIENT, {}, "token kind must be one of api, web, not 'cli'"),
        ("api", "192.0.2.1\x00", {}, "the client address must be at most 128 printable characters"),
        ("api", "x" * 129, {}, "the client address must be at most 128 printable characters"),
        ("api", CLIENT, {"idle": timedelta(0)}, "token lifetimes must be positive"),
        ("api", CLIENT, {"absolute": -SECOND}, "token lifetimes must be positive"),
    ],
)
def test_issue_refuses_bad_arguments(
    store: Store, kind: str, client: str, lifetimes: dict[str, timedelta], message: str
) -> None:
    with store.transaction() as session, pytest.raises(InvalidInput) as caught:
        issue_token(session, "ivan", kind, T0, client, **lifetimes)
    assert str(caught.value) == message


def _tampered(token: str) -> str:
    """The token with its first character changed."""
    return ("B" if token[0] == "A" else "A") + token[1:]


def _non_canonical(token: str) -> str:
    """The same 32 bytes, but with unused low bits set in the last character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return token[:-1] + alphabet[alphabet.index(token[-1]) | 1]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: "not a token",
        lambda t: secrets.token_urlsafe(32),  # well formed, never issued
        _tampered,
        _non_canonical,
        lambda t: t + "=",
        lambda t: t[:-1],
        lambda t: " " + t,
        lambda t: t + "\n",
        lambda t: t.replace(t[5], "\x00"),
        lambda t: base64.b64encode(base64.urlsafe_b64decode(t + "=")).decode(),  # standard b64
        lambda t: base64.urlsafe_b64decode(t + "=").hex(),
    ],
    ids=[
        "empty",
        "text",
        "unknown",
        "tampered",
        "non-canonical",
        "padded",
        "short",
        "leading-space",
        "newline",
        "nul",
        "standard-base64",
        "hex",
    ],
)
def test_unknown_and_malformed_tokens_are_refused_alike(
    store: Store, mangle: Callable[[str], str]
) -> None:
    issued = _issue(store)
    wrong = mangle(issued.token)
    assert wrong != issued.token
    _refused(store, wrong, T0)
    _refused(store, issued.token_id, T0)  # the public id is not a token
    _resolve(store, issued.token, T0)


def test_every_refusal_has_the_same_message(store: Store) -> None:
    """Expired, revoked, wrong kind and unknown: one message, one class."""
    refusals: set[tuple[type, str]] = set()
    expired = _issue(store, idle=timedelta(minutes=1))
    revoked = _issue(store)
    with store.transaction() as session:
        revoke_token(session, revoked.token_id, T0, "logout")
    for token, now, kind in (
        (expired.token, T0 + timedelta(minutes=1), None),
        (revoked.token, T0, None),
        (_issue(store).token, T0 + timedelta(hours=12), None),
        (_issue(store, kind="web").token, T0, "api"),
        (secrets.token_urlsafe(32), T0, None),
        ("garbage", T0, None),
    ):
        with pytest.raises(AuthenticationFailed) as caught:
            _resolve(store, token, now, kind)
        refusals.add((type(caught.value), str(caught.value)))
    assert refusals == {(AuthenticationFailed, INVALID_TOKEN)}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    token=st.one_of(
        st.text(),
        st.text(alphabet="ABCxyz019-_=+/", min_size=40, max_size=46),
        st.from_regex(r"\A[A-Za-z0-9_-]{43}\Z"),
        st.binary(min_size=32, max_size=32).map(
            lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")
        ),
    )
)
def test_resolve_token_raises_nothing_but_authentication_failed(store: Store, token: str) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        _resolve(store, token, T0)
    assert str(caught.value) == INVALID_TOKEN


# throttling ------------------------------------------------------------------------------


def _fail(store: Store, now: datetime, user: str = "ivan", client: str = CLIENT) -> bool:
    with store.transaction() as session:
        return record_failure(session, user, client, now)


def _wait(
    store: Store, now: datetime, user: str = "ivan", client: str = CLIENT
) -> TooManyAttempts | None:
    """The throttle's refusal at ``now``, or None if a login may be tried."""
    with store.transaction() as session:
        try:
            check_throttle(session, user, client, now)
        except TooManyAttempts as refusal:
            return refusal
    return None


def test_the_back_off_doubles_up_to_its_cap() -> None:
    assert [backoff(n) for n in range(5)] == [timedelta(0)] * 3 + [SECOND, 2 * SECOND]
    assert backoff(9) == 64 * SECOND
    assert backoff(12) == 512 * SECOND
    assert backoff(13) == timedelta(minutes=15)
    assert backoff(10**9) == timedelta(minutes=15)


def test_the_back_off_timeline_and_the_lock(store: Store) -> None:
    now = T0
    for _ in range(2):
        assert not _fail(store, now)
        assert _wait(store, now) is None
    for failures in range(3, 10):  # failure n waits 2 ** (n - 3) seconds
        assert not _fail(store, now)
        delay = timedelta(seconds=2 ** (failures - 3))
        refusal = _wait(store, now + delay - SECOND)
        assert refusal is not None
        assert refusal.retry_after == 1
        assert str(refusal) == (
            "too many failed logins for this user name or from this address: try again in 1 s"
        )
        assert _wait(store, now + delay) is None
        now += delay
    first = _wait(store, now - timedelta(seconds=64))
    assert first is not None and first.retry_after == 64

    assert _fail(store, now)  # the 10th failure locks
    locked = _wait(store, now + timedelta(minutes=29))
    assert isinstance(locked, TooManyAttempts)
    assert isinstance(locked, AuthenticationFailed)
    assert locked.retry_after == 60
    assert str(locked) == (
        "logins for this user name or from this address are locked after "
        "too many failed attempts: try again in 1 min, or ask an admin to "
        "lift the lock"
    )
    assert _wait(store, now + timedelta(minutes=30)) is None
    # after a lock, every further failure locks again
    now += timedelta(minutes=30)
    assert _fail(store, now)
    assert _wait(store, now + timedelta(minutes=30) - SECOND) is not None


def test_an_admin_lifts_a_lock(store: Store) -> None:
    for _ in range(10):
        _fail(store, T0)
    assert _wait(store, T0 + SECOND) is not None
    with store.transaction() as session:
        assert lift_lock(session, "ivan")
    with store.transaction() as session:
        assert not lift_lock(session, "ivan")  # nothing left to lift
    # the client's count was its own: a lift of the user leaves the client waiting
    assert _wait(store, T0 + SECOND) is not None
    assert _wait(store, T0 + SECOND, client="192.0.2.99") is None
    with store.transaction() as session:
        assert lift_lock(session, "ivan", client=CLIENT)
    assert _wait(store, T0 + SECOND) is None
    # the count starts again from zero
    _fail(store, T0 + SECOND)
    _fail(store, T0 + SECOND)
    assert _wait(store, T0 + SECOND) is None


def test_a_success_clears_the_user_and_the_client(store: Store) -> None:
    for _ in range(5):
        _fail(store, T0)
    assert _wait(store, T0) is not None
    with store.transaction() as session:
        record_success(session, "ivan", CLIENT)
    assert _wait(store, T0) is None
    _fail(store, T0)
    _fail(store, T0)
    assert _wait(store, T0) is None  # two failures since the success: no wait yet
    assert _wait(store, T0, user="stan") is None


def test_a_success_clears_no_other_key(store: Store) -> None:
    for _ in range(3):
        _fail(store, T0, user="mona", client="192.0.2.50")
    with store.transaction() as session:
        record_success(session, "ivan", CLIENT)
    assert _wait(store, T0, user="mona", client="192.0.2.51") is not None
    assert _wait(store, T0, user="stan", client="192.0.2.50") is not None


def test_the_client_is_throttled_whatever_user_names_it_tries(store: Store) -> None:
    for name in ("ivan", "stan", "nobody"):
        _fail(store, T0, user=name)
    for name in ("mona", "someone-else"):  # names never tried from here
        refusal = _wait(store, T0, user=name)
        assert refusal is not None and refusal.retry_after == 1
    for name in ("ivan", "stan", "nobody"):  # from elsewhere each name has one failure only
        assert _wait(store, T0, user=name, client="198.51.100.7") is None


def test_the_user_name_is_throttled_from_any_client(store: Store) -> None:
    for client in ("192.0.2.1", "192.0.2.2", "2001:db8::3"):
        _fail(store, T0, client=client)
    refusal = _wait(store, T0, client="203.0.113.9")
    assert refusal is not None and refusal.retry_after == 1
    assert _wait(store, T0, user="stan", client="203.0.113.9") is None


def test_throttling_does_not_tell_whether_the_user_exists(
    store: Store, trial_with_users: TrialFiles
) -> None:
    outcomes = []
    for user, client in (("ivan", "192.0.2.1"), ("nobody", "192.0.2.2")):
        refusals = []
        for step in range(11):
            _fail(store, T0 + step * timedelta(minutes=20), user=user, client=client)
            refusal = _wait(store, T0 + step * timedelta(minutes=20), user=user, client=client)
            assert refusal is not None or step < 2
            refusals.append(None if refusal is None else (str(refusal), refusal.retry_after))
        outcomes.append(refusals)
        assert user not in repr(refusals)
    assert outcomes[0] == outcomes[1]
    rows = execute(trial_with_users.db_url, "SELECT key, failures FROM login_failures ORDER BY key")
    assert rows == [
        ("client:192.0.2.1", 11),
        ("client:192.0.2.2", 11),
        ("user:ivan", 11),
        ("user:nobody", 11),
    ]


def test_failures_are_forgotten_after_a_quiet_day(store: Store) -> None:
    for _ in range(5):
        _fail(store, T0)
    later = T0 + sessions.FORGET_AFTER
    _fail(store, later)
    _fail(store, later)
    assert _wait(store, later) is None  # two failures counted, not seven


def test_a_lock_is_not_forgotten_while_it_lasts(store: Store) -> None:
    for _ in range(10):
        _fail(store, T0)
    assert _wait(store, T0 + timedelta(minutes=29)) is not None


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(user=st.text(max_size=300), client=st.text(max_size=300))
def test_any_user_name_and_client_can_be_throttled(store: Store, user: str, client: str) -> None:
    with store.transaction() as session:
        lift_lock(session, user, client)
    for _ in range(3):
        _fail(store, T0, user=user, client=client)
    refusal = _wait(store, T0, user=user, client=client)
    assert refusal is not None and refusal.retry_after == 1


def test_concurrent_first_failures_are_all_counted(
    store: Store, trial_with_users: TrialFiles
) -> None:
    workers = 4
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def fail() -> None:
        try:
            start.wait()
            _fail(store, T0, user="petra", client="192.0.2.77")
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=fail) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert execute(
        trial_with_users.db_url, "SELECT key, failures FROM login_failures ORDER BY key"
    ) == [("client:192.0.2.77", workers), ("user:petra", workers)]
