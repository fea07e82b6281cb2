"""Every operation of the OpenAPI document, fuzzed against a live server (schemathesis).

Each example is a request schemathesis draws from the document (valid or
deliberately invalid parameters and bodies), sent as one of: a user of each
role (a token issued directly on the database, so the login throttle never
interferes, and issued anew once a logout or a refusal may have ended it), a
forged token, a malformed one, an expired one, a revoked one, or no token.
Whatever the request, the server must answer no 5xx, only statuses the
document declares, bodies and headers that match it, and every refusal as one
line of ``{"error", "kind"}``.

Examples per operation: RANDOMIZER_FUZZ_EXAMPLES (default 50; an operation
without parameters or body is tried once per login), derandomized, so a run is
repeatable and stays under a thousand requests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckContext, CheckFunction
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from randomizer import audit
from randomizer.server import openapi
from randomizer.sessions import issue_token, revoke_token
from randomizer.store import Store
from tests.backends.live import live_server
from tests.support.trial import USERS, TrialFiles

# a failing example that holds a long value must still be reported
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

EXAMPLES = int(os.environ.get("RANDOMIZER_FUZZ_EXAMPLES", "50"))
"""Examples per operation; raise it for a long hunt."""

DOCUMENT = openapi.document()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = {
    f"{method.upper()} {path}": SCHEMA[path][method.upper()]
    for path, methods in DOCUMENT["paths"].items()
    for method in methods
}

BAD_LOGINS = ["forged", "malformed", "expired", "revoked", "none"]
LOGINS = [*USERS, *USERS, *BAD_LOGINS]
"""Who sends a request: a user of each role (twice as likely), or a bad token or none."""

FORGED = "Q" * 42 + "A"
"""Well formed (43 url-safe characters) but never issued."""


@dataclass
class FuzzTarget:
    """A live server on a prepared trial and a bearer header for each kind of login."""

    url: str
    store: Store
    fixed: dict[str, str]
    live: dict[str, str] = field(default_factory=dict)

    def bearer(self, login: str) -> dict[str, str]:
        """The Authorization header of ``login`` (none for "none")."""
        if login == "none":
            return {}
        token = self.fixed.get(login) or self.live.get(login)
        if token is None:
            with self.store.transaction() as session:
                token = issue_token(session, login, "api", audit.now_utc(), "fuzz").token
            self.live[login] = token
        return {"Authorization": f"Bearer {token}"}

    def spent(self, login: str) -> None:
        """Forget a user's token after a request that may have ended it (logout, 401)."""
        self.live.pop(login, None)


@pytest.fixture
def target(trial_with_list: TrialFiles) -> Iterator[FuzzTarget]:
    """The server, and tokens issued directly on its database (no login, so no throttle)."""
    store = Store(trial_with_list.db_url)
    now = audit.now_utc()
    with store.transaction() as session:
        # idle for a second, an hour ago: expired; the other one revoked at once
        expired = issue_token(
            session, "ivan", "api", now - timedelta(hours=1), "fuzz", idle=timedelta(seconds=1)
        ).token
        revoked = issue_token(session, "alice", "api", now, "fuzz").token
        revoke_token(session, revoked, now, "logout")
    fixed = {"forged": FORGED, "malformed": "not a token", "expired": expired, "revoked": revoked}
    try:
        with live_server(trial_with_list.db_url, trial_with_list.key_file) as url:
            yield FuzzTarget(url, store, fixed)
    finally:
        store.dispose()


def one_line_refusal(
    ctx: CheckContext, response: schemathesis.Response, case: Case[Any]
) -> bool | None:
    """No 5xx at all, and every refusal ``{"error": one line, "kind": name[, "hint": step]}``."""
    assert response.status_code < 500, f"server error {response.status_code}: {response.text}"
    if response.status_code < 400:
        return None
    body = json.loads(response.text)
    assert isinstance(body, dict) and {"error", "kind"} <= set(body) <= {"error", "kind", "hint"}, (
        body
    )
    assert isinstance(body["error"], str) and body["error"].strip(), body
    assert "\n" not in body["error"] and "Traceback" not in response.text, body
    return True


CHECKS: list[CheckFunction] = [
    one_line_refusal,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_operation_answers_only_what_the_document_says(target: FuzzTarget, label: str) -> None:
    operation = OPERATIONS[label]
    method, path = label.split(" ")
    declared = DOCUMENT["paths"][path][method.lower()]
    if "parameters" in declared or "requestBody" in declared:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )
    else:
        # nothing to generate but the login: every one is tried, once
        cases = st.builds(operation.Case)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, login=st.sampled_from(LOGINS))
    def run(case: Case[Any], login: str) -> None:
        headers = {**dict(case.headers or {}), **target.bearer(login)}
        response = case.call(base_url=target.url, headers=headers)
        if response.status_code in (204, 401):  # a logout, or a token another example ended
            target.spent(login)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
