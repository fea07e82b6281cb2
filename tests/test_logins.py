"""Logins in the library: one password check per attempt whoever the user, the throttle
around it, and an admin lifting a lock (time injected, never waited for)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from randomizer import context, logins
from randomizer.access import Permission, verify_password
from randomizer.backends.local import LocalBackend
from randomizer.context import (
    Credentials,
    KeySource,
    Principal,
    authenticate,
    key_file_source,
    operation,
)
from randomizer.errors import AuthenticationFailed, InvalidInput, TooManyAttempts
from randomizer.logins import LoginUnlock
from randomizer.sessions import LOCK_AFTER, backoff
from randomizer.store import Store
from tests.support.database import audit_rows, execute
from tests.support.trial import PASSWORDS, TrialFiles

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CLIENT = "192.0.2.10"
WRONG = "wrong-password-1"


@pytest.fixture
def store(trial_with_users: TrialFiles) -> Iterator[Store]:
    """The trial with one user per role (mona disabled), opened as the server would."""
    admin = LocalBackend(
        trial_with_users.db_url,
        trial_with_users.key_file,
        lambda: Credentials("alice", PASSWORDS["alice"]),
    )
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


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every stored hash a password is checked against, in order (a spy on verify_password)."""
    seen: list[str] = []

    def spy(password: str, stored: str) -> bool:
        seen.append(stored)
        return verify_password(password, stored)

    monkeypatch.setattr(context, "verify_password", spy)
    return seen


def _cost(stored: str) -> tuple[str, str, str, str]:
    """The scheme and scrypt parameters (n, r, p) of a stored hash."""
    scheme, n, r, p, _salt, _digest = stored.split("$")
    return scheme, n, r, p


def _user_hashes(files: TrialFiles) -> dict[str, str]:
    return dict(
        (name, stored)
        for name, stored in execute(files.db_url, "SELECT name, password_hash FROM users")
    )


ATTEMPTS = [
    ("ivan", PASSWORDS["ivan"], True),
    ("ivan", WRONG, False),
    ("nobody", WRONG, False),
    ("mona", PASSWORDS["mona"], False),
]
"""A good login, a wrong password, an unknown user and a disabled one (right password)."""


@pytest.mark.parametrize(
    ("user", "password", "accepted"),
    ATTEMPTS,
    ids=["good", "wrong-password", "unknown", "disabled"],
)
def test_every_login_checks_one_password_of_a_users_cost(
    store: Store,
    key: KeySource,
    checks: list[str],
    trial_with_users: TrialFiles,
    user: str,
    password: str,
    accepted: bool,
) -> None:
    real = _user_hashes(trial_with_users)
    for attempt in (
        lambda: authenticate(store, key, Credentials(user, password), T0, action="report"),
        lambda: logins.login(store, key, Credentials(user, password), T0, client=CLIENT),
    ):
        checks.clear()
        if accepted:
            attempt()
        else:
            with pytest.raises(AuthenticationFailed) as refused:
                attempt()
            assert type(refused.value) is AuthenticationFailed
        assert len(checks) == 1, checks
        (stored,) = checks
        assert {_cost(h) for h in real.values()} == {_cost(stored)}
        if user == "ivan":
            assert stored == real["ivan"]
        else:  # the dummy hash: no one's, not even the disabled user's own
            assert stored not in real.values()


def test_a_throttled_login_checks_no_password(
    store: Store, key: KeySource, checks: list[str]
) -> None:
    for user, client in (("ivan", "192.0.2.1"), ("nobody", "192.0.2.2")):
        for _ in range(3):
            with pytest.raises(AuthenticationFailed) as refused:
                logins.login(store, key, Credentials(user, WRONG), T0, client=client)
            assert type(refused.value) is AuthenticationFailed
    checks.clear()
    refusals = []
    for user in ("ivan", "nobody"):
        with pytest.raises(TooManyAttempts) as refused:
            logins.login(
                store, key, Credentials(user, PASSWORDS.get(user, WRONG)), T0, client="198.51.100.1"
            )
        refusals.append((str(refused.value), refused.value.retry_after))
    assert checks == []
    assert (
        refusals[0]
        == refusals[1]
        == ("too many failed logins for this user name or from this address: try again in 1 s", 1)
    )


def _lock(store: Store, key: KeySource, user: str, client: str) -> datetime:
    """Fail logins of ``user`` from ``client`` to the lock; the time of the last failure."""
    now = T0
    for failures in range(LOCK_AFTER):
        now += backoff(failures)
        with pytest.raises(AuthenticationFailed) as refused:
            logins.login(store, key, Credentials(user, WRONG), now, client=client)
        assert type(refused.value) is AuthenticationFailed
    return now


def _lift(
    store: Store,
    key: KeySource,
    now: datetime,
    user: str,
    client: str | None = None,
    admin: str = "alice",
) -> LoginUnlock:
    with operation(
        store, key, Principal(admin), Permission.MANAGE_USERS, "user.unlock", now, subject=user
    ) as op:
        return logins.lift_login_lock(op, user, client)


def test_an_admin_lifts_a_lock_of_the_name_and_of_the_address(
    store: Store, key: KeySource, trial_with_users: TrialFiles
) -> None:
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
        ("alice", "admin", "ivan", {"client": CLIENT, "lifted": False}),
    ]


def test_a_lock_on_a_name_without_an_account_lifts_alike(store: Store, key: KeySource) -> None:
    now = _lock(store, key, "nobody", CLIENT)
    assert _lift(store, key, now, "nobody", CLIENT) == LoginUnlock("nobody", CLIENT, True)
    with pytest.raises(AuthenticationFailed) as refused:
        logins.login(store, key, Credentials("nobody", WRONG), now, client=CLIENT)
    assert type(refused.value) is AuthenticationFailed  # counted again, not throttled


@pytest.mark.parametrize(
    ("user", "client", "message"),
    [
        ("ivan smith", None, "user name 'ivan smith' is not valid"),
        ("", None, "user name '' is not valid"),
        ("ivan", "", "client address '' is not valid"),
        ("ivan", "a" * 129, "client address 'aaaa"),
        ("ivan", "10.0.0.1\n", "client address '10.0.0.1\\n' is not valid"),
    ],
)
def test_a_lift_of_something_no_login_can_be_is_bad_input(
    store: Store,
    key: KeySource,
    trial_with_users: TrialFiles,
    user: str,
    client: str | None,
    message: str,
) -> None:
    before = audit_rows(trial_with_users.db_url)
    with pytest.raises(InvalidInput) as refused:
        _lift(store, key, T0, user, client)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)
    assert audit_rows(trial_with_users.db_url) == before  # malformed input records nothing
