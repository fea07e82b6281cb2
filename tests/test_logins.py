"""Logins in the library: the throttle and an admin lifting a lock (time injected, never
waited for)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from randomizer import logins
from randomizer.access import Permission
from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials, KeySource, Principal, key_file_source, operation
from randomizer.errors import AuthenticationFailed, InvalidInput, TooManyAttempts
from randomizer.logins import LoginUnlock
from randomizer.sessions import LOCK_AFTER, backoff
from randomizer.store import Store
from tests.support.database import audit_rows
from tests.support.trial import PASSWORDS, TrialFiles

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CLIENT = "192.0.2.10"
WRONG = "wrong-password-1"


@pytest.fixture
def store(trial_with_users: TrialFiles) -> Iterator[Store]:
    """The trial with one user per role (mona disabled), opened as the server would."""
    admin = LocalBackend(trial_with_users.db_url, trial_with_users.key_file,
                         lambda: Credentials("alice", PASSWORDS["alice"]))
    try:
        admin.disable_user("mona", "left")
    finally:
        admin.close()
    database = Store(trial_with_users.db_url)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def key(trial_with_users: TrialFiles) -> KeySource:
    """The trial key, read from its file."""
    return key_file_source(trial_with_users.key_file)


def _lock(store: Store, key: KeySource, user: str, client: str) -> datetime:
    """Fail logins of ``user`` from ``client`` to the lock; the time of the last failure."""
    now = T0
    for failures in range(LOCK_AFTER):
        now += backoff(failures)
        with pytest.raises(AuthenticationFailed) as refused:
            logins.login(store, key, Credentials(user, WRONG), now, client=client)
        assert type(refused.value) is AuthenticationFailed
    return now


def _lift(store: Store, key: KeySource, now: datetime, user: str,
          client: str | None = None, admin: str = "alice") -> LoginUnlock:
    with operation(store, key, Principal(admin), Permission.MANAGE_USERS, "user.unlock",
                   now, subject=user) as op:
        return logins.lift_login_lock(op, user, client)


def test_an_admin_lifts_a_lock_of_the_name_and_of_the_address(
        store: Store, key: KeySource, trial_with_users: TrialFiles) -> None:
    now = _lock(store, key, "ivan", CLIENT) + timedelta(minutes=1)
    good = Credentials("ivan", PASSWORDS["ivan"])
    with pytest.raises(TooManyAttempts) as locked:
        logins.login(store, key, good, now, client="198.51.100.1")
    assert locked.value.retry_after == 29 * 60
    assert _lift(store, key, now, "ivan") == LoginUnlock("ivan", None, True)
    logins.login(store, key, good, now, client="198.51.100.1")
    with pytest.raises(TooManyAttempts):  # the address locked itself as well
        logins.login(store, key, good, now, client=CLIENT)
    assert _lift(store, key, now, "ivan", CLIENT) == LoginUnlock("ivan", CLIENT, True)
    logins.login(store, key, good, now, client=CLIENT)
    assert _lift(store, key, now, "ivan", CLIENT) == LoginUnlock("ivan", CLIENT, False)
    events = [e for e in audit_rows(trial_with_users.db_url) if e["action"] == "user.unlock"]
    assert [(e["user"], e["role"], e["subject"], e["details"]) for e in events] == [
        ("alice", "admin", "ivan", {"client": None, "lifted": True}),
        ("alice", "admin", "ivan", {"client": CLIENT, "lifted": True}),
        ("alice", "admin", "ivan", {"client": CLIENT, "lifted": False})]


def test_a_lock_on_a_name_without_an_account_lifts_alike(store: Store,
                                                         key: KeySource) -> None:
    now = _lock(store, key, "nobody", CLIENT)
    assert _lift(store, key, now, "nobody", CLIENT) == LoginUnlock("nobody", CLIENT, True)
    with pytest.raises(AuthenticationFailed) as refused:
        logins.login(store, key, Credentials("nobody", WRONG), now, client=CLIENT)
    assert type(refused.value) is AuthenticationFailed  # counted again, not throttled


@pytest.mark.parametrize(("user", "client", "message"), [
    ("ivan smith", None, "user name 'ivan smith' is not valid"),
    ("", None, "user name '' is not valid"),
    ("ivan", "", "client address '' is not valid"),
    ("ivan", "a" * 129, "client address 'aaaa"),
    ("ivan", "10.0.0.1\n", "client address '10.0.0.1\\n' is not valid"),
])
def test_a_lift_of_something_no_login_can_be_is_bad_input(
        store: Store, key: KeySource, trial_with_users: TrialFiles, user: str,
        client: str | None, message: str) -> None:
    before = audit_rows(trial_with_users.db_url)
    with pytest.raises(InvalidInput) as refused:
        _lift(store, key, T0, user, client)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)
    assert audit_rows(trial_with_users.db_url) == before  # malformed input records nothing
