"""Per-site rights over HTTP: another site's participant answers exactly as a missing one.

Same status, same headers, same body bytes, whether participant P-201 does not
exist yet or exists at a site the caller is not limited to.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import httpx
import pytest

from tests.backends.live import live_server
from tests.support.exosome import ELIGIBLE
from tests.support.sites import SITE_PASSWORDS
from tests.support.trial import TrialFiles

START = (date.today() - timedelta(days=100)).isoformat()
VARYING = {"date", "content-length"}
"""Headers that may differ between two answers for reasons of their own."""


@pytest.fixture
def client(two_sites: TrialFiles) -> Iterator[httpx.Client]:
    """A client of a live server for the two-site trial."""
    with (
        live_server(two_sites.db_url, two_sites.key_file) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


def _headers(client: httpx.Client, user: str) -> dict[str, str]:
    response = client.post(
        "/api/v1/auth/token", json={"user": user, "password": SITE_PASSWORDS[user]}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _answer(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in VARYING}
    return response.status_code, response.content, headers


def test_another_sites_participant_answers_byte_for_byte_as_a_missing_one(
    client: httpx.Client,
) -> None:
    wanda = _headers(client, "wanda")

    def ask() -> list[tuple[int, bytes, dict[str, str]]]:
        return [
            _answer(
                client.post("/api/v1/participants/P-201/kits", json={"visit": 2}, headers=wanda)
            ),
            _answer(
                client.post(
                    "/api/v1/participants/P-201/emergency-unblinding",
                    json={"reason": "anaphylaxis"},
                    headers=wanda,
                )
            ),
        ]

    missing = ask()
    randomized = client.post(
        "/api/v1/participants",
        json={"participant": "P-201", "site": "KRK", "answers": dict(ELIGIBLE), "date": START},
        headers=_headers(client, "kris"),
    )
    assert randomized.status_code == 200, randomized.text
    assert ask() == missing
    assert missing[0][0] == 404
    assert missing[0][1] == (
        b'{"error":"participant P-201 is not randomized in this trial","kind":"NotFound"}'
    )


def test_the_participant_view_route(client: httpx.Client) -> None:
    wanda = _headers(client, "wanda")
    assert client.get("/api/v1/participants", headers=wanda).json() == []
    refused = client.get("/api/v1/participants", params={"site": "KRK"}, headers=wanda)
    assert (refused.status_code, refused.json()) == (
        403,
        {
            "error": "user wanda may not see participants at site KRK: limited to site WAW",
            "kind": "NotAuthorized",
        },
    )
    unknown = client.get("/api/v1/participants", params={"sites": "WAW"}, headers=wanda)
    assert unknown.status_code == 422
