"""Failed logins through the API: 429 with Retry-After per user name and per client address,
the same for every name, and an admin lifting a lock (API, HTTP client, remote CLI).

The server runs on a clock the test moves, so no test waits and none depends on how
fast it runs. Clients come from different loopback addresses (127.0.0.x), so the
server counts them as different client addresses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from randomizer import access, audit
from randomizer.backends.http import HttpBackend
from randomizer.context import Credentials
from randomizer.errors import TooManyAttempts
from randomizer.sessions import LOCK_AFTER, LOCK_DURATION, backoff, record_failure
from randomizer.store import Store
from tests.backends.live import live_server
from tests.support.assertions import assert_error, assert_ok
from tests.support.database import audit_rows
from tests.support.trial import PASSWORDS, Run, TrialFiles

WRONG = "wrong-password-1"
BACKING_OFF = "too many failed logins for this user name or from this address: try again in 1 s"
LOCKED = (
    "logins for this user name or from this address are locked after too many "
    "failed attempts: try again in 30 min, or ask an admin to lift the lock"
)


@dataclass
class Clock:
    """The server's clock: stands still until the test moves it."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        """Move the clock on by ``delta``."""
        self.now += delta


@dataclass
class Server:
    """A live server on a test clock, and clients from any loopback address."""

    url: str
    files: TrialFiles
    clock: Clock
    stack: ExitStack
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def at(self, address: str) -> httpx.Client:
        """A client whose requests come from ``address`` (127.0.0.x)."""
        if address not in self.clients:
            transport = httpx.HTTPTransport(local_address=address)
            self.clients[address] = self.stack.enter_context(
                httpx.Client(base_url=self.url, transport=transport, timeout=30)
            )
        return self.clients[address]

    def login(
        self, user: str, password: str | None = None, address: str = "127.0.0.2"
    ) -> httpx.Response:
        """``POST /auth/token`` from ``address``."""
        return self.at(address).post(
            "/api/v1/auth/token",
            json={"user": user, "password": PASSWORDS[user] if password is None else password},
        )

    def as_admin(self, address: str = "127.0.0.1") -> dict[str, str]:
        """Headers of a fresh admin login (from an address nobody throttled)."""
        response = self.login("alice", address=address)
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    def fail_until_locked(self, user: str, address: str) -> None:
        """Wrong passwords for ``user`` from ``address``, waiting out each back-off, to the lock."""
        for failures in range(LOCK_AFTER):
            self.clock.advance(backoff(failures))
            assert self.login(user, WRONG, address).status_code == 401


@pytest.fixture
def server(trial_with_list: TrialFiles) -> Iterator[Server]:
    """The prepared trial served on a test clock."""
    clock = Clock(audit.now_utc())
    with ExitStack() as stack:
        url = stack.enter_context(
            live_server(trial_with_list.db_url, trial_with_list.key_file, clock=clock)
        )
        yield Server(url, trial_with_list, clock, stack)


def _throttled(response: httpx.Response) -> tuple[str, str]:
    """A 429 refusal's message and Retry-After; its body is exactly error and kind."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"error", "kind"} and body["kind"] == "TooManyAttempts", body
    assert "WWW-Authenticate" not in response.headers
    return body["error"], response.headers["Retry-After"]


def test_past_three_failures_the_user_name_waits_even_from_another_address(server: Server) -> None:
    for _ in range(3):
        assert server.login("ivan", WRONG).status_code == 401
    # the right password, from elsewhere: refused before it is checked
    assert _throttled(server.login("ivan", address="127.0.0.3")) == (BACKING_OFF, "1")
    server.clock.advance(timedelta(seconds=1))
    assert server.login("ivan", address="127.0.0.3").status_code == 200


def test_past_three_failures_the_address_waits_whatever_the_name(server: Server) -> None:
    for name in ("nobody", "nemo", "stan"):
        assert server.login(name, WRONG).status_code == 401
    assert _throttled(server.login("petra")) == (BACKING_OFF, "1")
    assert server.login("petra", address="127.0.0.3").status_code == 200


def test_the_refusal_reads_the_same_for_a_user_and_for_no_one(server: Server) -> None:
    answers = []
    for user, address in (("ivan", "127.0.0.2"), ("nobody", "127.0.0.3")):
        for _ in range(3):
            assert server.login(user, WRONG, address).status_code == 401
        answers.append(_throttled(server.login(user, WRONG, "127.0.0.4")))
    assert answers[0] == answers[1]


def test_a_locked_user_is_refused_until_an_admin_lifts_the_lock(server: Server) -> None:
    server.fail_until_locked("ivan", "127.0.0.2")
    server.clock.advance(timedelta(minutes=5))
    assert _throttled(server.login("ivan", address="127.0.0.3")) == (
        LOCKED.replace("30 min", "25 min"),
        str(int((LOCK_DURATION - timedelta(minutes=5)).total_seconds())),
    )
    admin = server.as_admin()
    lifted = server.at("127.0.0.1").post("/api/v1/users/ivan/unlock", json={}, headers=admin)
    assert lifted.status_code == 200
    assert lifted.json() == {"user": "ivan", "client": None, "lifted": True}
    assert server.login("ivan", address="127.0.0.3").status_code == 200
    # ivan's own address locked itself too: it waits until its lock is lifted as well
    assert _throttled(server.login("ivan"))[0] == LOCKED.replace("30 min", "25 min")
    both = server.at("127.0.0.1").post(
        "/api/v1/users/ivan/unlock", json={"client": "127.0.0.2"}, headers=admin
    )
    assert both.json() == {"user": "ivan", "client": "127.0.0.2", "lifted": True}
    assert server.login("ivan").status_code == 200
    again = server.at("127.0.0.1").post("/api/v1/users/ivan/unlock", json={}, headers=admin)
    assert again.json() == {"user": "ivan", "client": None, "lifted": False}
    unlocks = [e for e in audit_rows(server.files.db_url) if e["action"] == "user.unlock"]
    assert [
        (e["user"], e["subject"], e["details"]["client"], e["details"]["lifted"]) for e in unlocks
    ] == [
        ("alice", "ivan", None, True),
        ("alice", "ivan", "127.0.0.2", True),
        ("alice", "ivan", None, False),
    ]
    assert unlocks[0]["details"]["via"]["client"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("user", "path", "body", "status", "message"),
    [
        ("ivan", "ivan", {}, 403, "role investigator may not manage users"),
        ("mona", "alice", {}, 403, "role monitor may not manage users"),
        ("alice", "not%20a%20name", {}, 400, "user name 'not a name' is not valid"),
        ("alice", "ivan", {"client": "\u00850"}, 400, "client address '\\x850' is not valid"),
        ("alice", "ivan", {"user": "x"}, 422, "malformed request: user: "),
        ("alice", "ivan", {"client": 7}, 422, "malformed request: client: "),
    ],
)
def test_lifting_a_lock_refuses(
    server: Server, user: str, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    token = server.login(user, address="127.0.0.1").json()["token"]
    response = server.at("127.0.0.1").post(
        f"/api/v1/users/{path}/unlock", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "kind"}
    assert response.json()["error"].startswith(message), response.json()


def _lock(files: TrialFiles, user: str, client: str) -> None:
    store = Store(files.db_url)
    try:
        with store.transaction() as session:
            for _ in range(LOCK_AFTER):
                record_failure(session, user, client, audit.now_utc())
    finally:
        store.dispose()


def test_the_http_client_raises_too_many_attempts_with_the_wait(
    trial_with_list: TrialFiles,
) -> None:
    _lock(trial_with_list, "ivan", "192.0.2.1")
    with live_server(trial_with_list.db_url, trial_with_list.key_file) as url:
        client = HttpBackend(url)
        try:
            with pytest.raises(TooManyAttempts) as raised:
                client.login(Credentials("ivan", PASSWORDS["ivan"]))
        finally:
            client.close()
    assert str(raised.value) == LOCKED
    assert 1700 < raised.value.retry_after <= 1800


def test_the_remote_cli_reports_the_lock_and_an_admin_lifts_it(
    trial_with_list: TrialFiles, run: Run, tmp_path: Path
) -> None:
    _lock(trial_with_list, "ivan", "192.0.2.1")
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    with live_server(trial_with_list.db_url, trial_with_list.key_file) as url:
        assert_error(run("--server", url, "login", user="ivan", env=env), 1, LOCKED)
        refused = run("--server", url, "user", "unlock", "ivan", user="mona", env=env)
        assert_error(refused, 1, "role monitor may not manage users")
        lifted = run("--server", url, "user", "unlock", "ivan", user="alice", env=env)
        assert_ok(lifted)
        assert lifted.stdout == "Login lock of user name ivan lifted.\n"
        assert_ok(run("--server", url, "login", user="ivan", env=env))


def test_the_first_unknown_user_costs_no_more_than_any_other(
    trial_with_list: TrialFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access, "_DUMMY_HASHES", {})  # as in a process that just started
    with (
        live_server(trial_with_list.db_url, trial_with_list.key_file) as url,
        httpx.Client(base_url=url) as client,
    ):
        made: list[str] = []

        def spy(password: str, **_: object) -> str:
            made.append(password)
            return ""

        monkeypatch.setattr(access, "hash_password", spy)
        response = client.post("/api/v1/auth/token", json={"user": "nobody", "password": WRONG})
        assert response.status_code == 401
    assert made == []  # the dummy hash was made at start, not during this login
