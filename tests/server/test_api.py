"""The JSON API over a real server on a loopback port: logins, tokens, bad input, headers, audit.

The blinded path itself is the Backend contract (tests/backends), run through
this server too; here are the things only the HTTP layer has.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from randomizer import __version__
from randomizer.server.pages import CONTENT_SECURITY_POLICY
from randomizer.sessions import INVALID_TOKEN
from randomizer.signatures import MEANINGS
from tests.backends.live import live_server
from tests.support.database import audit_rows, dump_database, execute
from tests.support.exosome import ELIGIBLE
from tests.support.trial import PASSWORDS, TrialFiles


@dataclass
class Api:
    """A live server and an httpx client for it."""

    url: str
    client: httpx.Client
    files: TrialFiles

    def token(self, user: str, password: str | None = None) -> str:
        response = self.client.post(
            "/api/v1/auth/token", json={"user": user, "password": password or PASSWORDS[user]}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def as_user(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}


@pytest.fixture
def api(trial_with_list: TrialFiles) -> Iterator[Api]:
    """A server for the prepared trial and a client."""
    with (
        live_server(trial_with_list.db_url, trial_with_list.key_file) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield Api(url, client, trial_with_list)


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert {"error", "kind"} <= set(body) <= {"error", "kind", "hint"}, body
    assert "\n" not in body["error"] and "Traceback" not in response.text
    message: str = body["error"]
    return message


def test_health_needs_no_login_and_says_only_status_and_version(api: Api) -> None:
    response = api.client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "token abc"])
def test_missing_or_malformed_authorization_is_401(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = api.client.get("/api/v1/report", headers=headers)
    # the library's refusal, never FastAPI's HTTPBearer default (403 "Not authenticated")
    message = _error(response, 401)
    assert message.startswith("log in first")
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("token", ["x" * 43, "A" * 10, "é" * 43, "0" * 500])
def test_forged_tokens_are_refused_alike(api: Api, token: str) -> None:
    response = api.client.get(
        "/api/v1/report", headers={b"Authorization": f"Bearer {token}".encode()}
    )
    assert _error(response, 401) == "the login is not valid or has expired: log in again"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_wrong_password_unknown_and_disabled_users_read_the_same(api: Api) -> None:
    alice = api.as_user("alice")
    assert (
        api.client.post(
            "/api/v1/users/mona/disable", json={"reason": "left"}, headers=alice
        ).status_code
        == 200
    )
    bodies = []
    for user, password in [
        ("ivan", "wrong-password-1"),
        ("nobody", "wrong-password-1"),
        ("mona", PASSWORDS["mona"]),
    ]:
        response = api.client.post("/api/v1/auth/token", json={"user": user, "password": password})
        bodies.append(_error(response, 401).replace(repr(user), "U"))
    assert len(set(bodies)) == 1, bodies
    failed = [e for e in audit_rows(api.files.db_url) if e["action"] == "auth.failed"]
    assert [e["details"]["refusal"] for e in failed] == [
        "wrong password",
        "unknown user",
        "disabled user",
    ]


def test_logout_revokes_the_token(api: Api) -> None:
    headers = api.as_user("ivan")
    assert api.client.get("/api/v1/report", headers=headers).status_code == 200
    assert api.client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    _error(api.client.get("/api/v1/report", headers=headers), 401)


def test_disable_and_password_change_revoke_every_token(api: Api) -> None:
    first, second = api.as_user("ivan"), api.as_user("ivan")
    monitor = api.as_user("mona")
    alice = api.as_user("alice")
    response = api.client.post(
        "/api/v1/users/ivan/password", json={"password": "a-new-password-123"}, headers=alice
    )
    assert response.status_code == 200
    for headers in (first, second):
        _error(api.client.get("/api/v1/report", headers=headers), 401)
    assert api.client.get("/api/v1/report", headers=monitor).status_code == 200
    api.client.post("/api/v1/users/mona/disable", json={"reason": "left"}, headers=alice)
    _error(api.client.get("/api/v1/report", headers=monitor), 401)


def _signed(user: str, action: str, password: str | None = None) -> dict[str, str]:
    """The ``signature`` object of a signed request."""
    return {"password": password or PASSWORDS[user], "meaning": MEANINGS[action]}


def test_a_signed_action_needs_the_password_again_even_with_a_token(api: Api) -> None:
    ivan = api.as_user("ivan")
    body: dict[str, Any] = {"participant": "P-001", "site": "WAW", "answers": ELIGIBLE}
    unsigned = api.client.post("/api/v1/participants", json=body, headers=ivan)
    assert _error(unsigned, 422) == "malformed request: signature: Field required"
    wrong = api.client.post(
        "/api/v1/participants",
        json={**body, "signature": _signed("ivan", "randomize", "not-ivans-password")},
        headers=ivan,
    )
    assert _error(wrong, 401) == (
        "signature refused for user 'ivan': wrong password or disabled account; nothing was done"
    )
    [failed] = [e for e in audit_rows(api.files.db_url) if e["action"] == "signature.failed"]
    assert (failed["user"], failed["subject"], failed["details"]["refusal"]) == (
        "ivan",
        "P-001",
        "wrong password",
    )
    assert failed["details"]["via"]["channel"] == "api"
    assert execute(api.files.db_url, "SELECT count(*) FROM participants") == [(0,)]
    signed = {**body, "signature": _signed("ivan", "randomize")}
    assert api.client.post("/api/v1/participants", json=signed, headers=ivan).status_code == 200


def test_role_comes_from_the_token_not_the_body(api: Api) -> None:
    ivan = api.as_user("ivan")
    body = {"reason": "x", "signature": _signed("ivan", "lock")}
    message = _error(api.client.post("/api/v1/lock", json=body, headers=ivan), 403)
    assert message == "role investigator may not lock the database"
    forged = api.client.post("/api/v1/lock", json={**body, "user": "alice"}, headers=ivan)
    assert _error(forged, 422).startswith("malformed request: user: ")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"{not json", "body"),
        (b"[]", "body"),
        (json.dumps({"participant": "P-1", "site": "WAW", "extra": 1}).encode(), "extra"),
        (json.dumps({"participant": 7, "site": "WAW"}).encode(), "participant"),
        (json.dumps({"participant": "P\u00001", "site": "WAW"}).encode(), "participant"),
        (json.dumps({"participant": "P-1" * 700, "site": "WAW"}).encode(), "participant"),
        (json.dumps({"participant": "P-1", "site": "WAW", "date": "2020-13-45"}).encode(), "date"),
    ],
)
def test_malformed_bodies_are_422_and_change_nothing(api: Api, body: bytes, where: str) -> None:
    headers = {**api.as_user("ivan"), "Content-Type": "application/json"}
    before = dump_database(api.files.db_url)
    message = _error(api.client.post("/api/v1/participants", content=body, headers=headers), 422)
    assert message.startswith("malformed request: ") and where in message
    after = dump_database(api.files.db_url)
    assert {k: v for k, v in after.items() if not k.startswith(("audit", "auth_tokens"))} == {
        k: v for k, v in before.items() if not k.startswith(("audit", "auth_tokens"))
    }


def test_oversized_body_is_413(api: Api) -> None:
    headers = {**api.as_user("ivan"), "Content-Type": "application/json"}
    body = b'{"participant": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    message = _error(api.client.post("/api/v1/participants", content=body, headers=headers), 413)
    assert message == "request body too large: at most 1048576 bytes"


def test_unknown_endpoint_and_method(api: Api) -> None:
    assert _error(api.client.get("/api/v1/nothing-here"), 404) == "no such endpoint"
    refused = api.client.delete("/api/v1/health")
    assert _error(refused, 405) == "method not allowed"
    assert refused.headers["Allow"] == "GET"  # RFC 9110: a 405 names the methods allowed


@pytest.mark.parametrize("query", ["?limit=1&sinse=2", "?limit=1&=null", "?since=1&since2=0"])
def test_unknown_query_parameters_are_refused(api: Api, query: str) -> None:
    # found by the schema fuzz (test_api_fuzz): a misspelt parameter was ignored, so
    # "since" silently meant 0 and the whole trail came back
    message = _error(
        api.client.get(f"/api/v1/audit/events{query}", headers=api.as_user("mona")), 422
    )
    assert message.startswith("malformed request: ") and "Extra inputs" in message


def test_library_refusals_cross_with_their_class(api: Api) -> None:
    ivan = api.as_user("ivan")
    body: dict[str, Any] = {
        "participant": "P-001",
        "site": "WAW",
        "answers": ELIGIBLE,
        "signature": _signed("ivan", "randomize"),
    }
    assert api.client.post("/api/v1/participants", json=body, headers=ivan).status_code == 200
    again = api.client.post("/api/v1/participants", json=body, headers=ivan)
    assert again.json() == {
        "error": "participant P-001 is already randomized as R-001",
        "kind": "StateError",
    }
    assert again.status_code == 409
    missing = api.client.post("/api/v1/participants/P-404/kits", json={"visit": 2}, headers=ivan)
    assert _error(missing, 404) == "participant P-404 is not randomized in this trial"
    bad = api.client.post("/api/v1/participants", json={**body, "participant": "P 1"}, headers=ivan)
    assert _error(bad, 400).startswith("participant id 'P 1' is not valid")


def test_events_of_a_request_name_channel_token_id_and_client(api: Api) -> None:
    response = api.client.post(
        "/api/v1/auth/token", json={"user": "ivan", "password": PASSWORDS["ivan"]}
    )
    token, token_id = response.json()["token"], response.json()["token_id"]
    api.client.post(
        "/api/v1/participants",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "participant": "P-001",
            "site": "WAW",
            "answers": ELIGIBLE,
            "signature": _signed("ivan", "randomize"),
        },
    )
    events = audit_rows(api.files.db_url)
    login = [e for e in events if e["action"] == "auth.login" and e["user"] == "ivan"][-1]
    randomize = [e for e in events if e["action"] == "randomize"][-1]
    for event in (login, randomize):
        assert event["details"]["via"] == {
            "channel": "api",
            "session": token_id,
            "client": "127.0.0.1",
        }
    assert token not in json.dumps(events)


def test_server_start_and_stop_are_audited(trial_with_list: TrialFiles) -> None:
    with live_server(trial_with_list.db_url, trial_with_list.key_file):
        started = [e["action"] for e in audit_rows(trial_with_list.db_url)]
        assert started[-1] == "server.start"
    events = audit_rows(trial_with_list.db_url)
    assert [e["action"] for e in events][-1] == "server.stop"
    assert events[-1]["user"] == "(server)"


def test_sensitive_answers_are_never_cached(api: Api) -> None:
    ivan = api.as_user("ivan")
    api.client.post(
        "/api/v1/participants",
        headers=ivan,
        json={
            "participant": "P-001",
            "site": "WAW",
            "answers": ELIGIBLE,
            "signature": _signed("ivan", "randomize"),
        },
    )
    response = api.client.post(
        "/api/v1/participants/P-001/emergency-unblinding",
        json={"reason": "anaphylaxis", "signature": _signed("ivan", "unblind.emergency")},
        headers=ivan,
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert api.client.get("/api/v1/health").headers["X-Content-Type-Options"] == "nosniff"


def _randomize(api: Api, participant: str, headers: dict[str, str]) -> httpx.Response:
    return api.client.post(
        "/api/v1/participants",
        json={
            "participant": participant,
            "site": "WAW",
            "answers": ELIGIBLE,
            "signature": _signed("ivan", "randomize"),
        },
        headers=headers,
    )


def test_a_randomization_is_refused_on_the_very_next_request_after_logout_or_disable(
    api: Api,
) -> None:
    # the token is checked in the database on every request: nothing is cached across them
    ivan = api.as_user("ivan")
    assert _randomize(api, "P-001", ivan).status_code == 200
    assert api.client.post("/api/v1/auth/logout", headers=ivan).status_code == 204
    assert _error(_randomize(api, "P-002", ivan), 401) == INVALID_TOKEN
    again = api.as_user("ivan")
    assert _randomize(api, "P-002", again).status_code == 200
    alice = api.as_user("alice")
    disabled = api.client.post("/api/v1/users/ivan/disable", json={"reason": "left"}, headers=alice)
    assert disabled.status_code == 200
    assert _error(_randomize(api, "P-003", again), 401) == INVALID_TOKEN
    assert execute(api.files.db_url, "SELECT code FROM participants ORDER BY id") == [
        ("P-001",),
        ("P-002",),
    ]


def test_every_api_answer_carries_the_security_headers(api: Api) -> None:
    ivan = api.as_user("ivan")
    answers = {
        "randomized": _randomize(api, "P-001", ivan),
        "refused": _randomize(api, "P-001", ivan),
        "no token": _randomize(api, "P-002", {}),
        "malformed": api.client.post("/api/v1/participants", json={"x": 1}, headers=ivan),
        "no such endpoint": api.client.get("/api/v1/nothing-here"),
    }
    assert [r.status_code for r in answers.values()] == [200, 409, 401, 422, 404]
    for what, response in answers.items():
        headers = response.headers
        assert headers["Cache-Control"] == "no-store", what
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, what
        assert headers["X-Content-Type-Options"] == "nosniff", what
        assert headers["Referrer-Policy"] == "no-referrer", what
        assert headers["X-Frame-Options"] == "DENY", what
