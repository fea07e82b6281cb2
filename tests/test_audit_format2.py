"""Audit stored format 2: canonical details text, MAC input by concatenation, old rows too.

``tests/data/formats-v2-audit.json`` (frozen, beside the frozen formats-v1.json) holds
the rows that :func:`randomizer.audit.append` stores for the v1 vector events: the
``details`` column in canonical form, the MACs of format 1 unchanged.
"""

from __future__ import annotations

import hmac
import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from randomizer import audit
from randomizer.errors import AuditError
from randomizer.models import AuditHead
from randomizer.models import AuditRecord as AuditRow
from randomizer.store import Store
from tests.test_formats import EVENTS, load_format_vectors, new_trail, v1_vault

V2 = load_format_vectors("formats-v2-audit.json")
ROWS: list[dict[str, Any]] = V2["rows"]


def test_the_vector_rows_are_the_v1_events_with_canonical_details() -> None:
    assert V2["format"] == "randomizer/audit-stored-v2"
    assert [r["mac"] for r in ROWS] == [e["mac"] for e in EVENTS]
    for row, event in zip(ROWS, EVENTS, strict=True):
        assert row["details"] == audit.details_text(event["details"])
        assert json.loads(row["details"]) == event["details"]
        body = audit.stored_body(
            row["seq"],
            row["at"],
            row["user"],
            row["role"],
            row["action"],
            row["subject"],
            row["reason"],
            row["details"],
        )
        assert body == event["canonical"].encode("utf-8")


def stored_rows(db_url: str) -> list[dict[str, Any]]:
    store = Store(db_url)
    try:
        with store.transaction(read_only=True) as session:
            return [
                {c: getattr(r, c) for c in ROWS[0]}
                for r in session.scalars(select(AuditRow).order_by(AuditRow.seq))
            ]
    finally:
        store.dispose()


def test_append_stores_exactly_the_vector_rows(db_url: str) -> None:
    store = new_trail(db_url)
    try:
        with store.transaction() as session:
            for e in EVENTS:
                audit.append(
                    session,
                    v1_vault().audit_key(),
                    now=datetime.fromisoformat(e["at"]),
                    user=e["user"],
                    role=e["role"],
                    action=e["action"],
                    subject=e["subject"],
                    reason=e["reason"],
                    details=e["details"],
                )
    finally:
        store.dispose()
    assert stored_rows(db_url) == ROWS


def store_rows(db_url: str, rows: list[dict[str, Any]]) -> Store:
    """A trail holding ``rows`` as they are, its head on the last."""
    store = new_trail(db_url)
    with store.transaction() as session:
        session.add_all(AuditRow(**row) for row in rows)
        session.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(seq=rows[-1]["seq"], mac=rows[-1]["mac"])
        )
    return store


def format1(row: dict[str, Any]) -> dict[str, Any]:
    """The row as format 1 stored it: details with spaces after ',' and ':'."""
    return {
        **row,
        "details": json.dumps(json.loads(row["details"]), sort_keys=True, ensure_ascii=False),
    }


@pytest.mark.parametrize("old", [0, 2, len(ROWS)], ids=["format 2", "mixed", "format 1"])
def test_a_trail_of_old_new_or_mixed_rows_verifies(db_url: str, old: int) -> None:
    rows = [format1(r) for r in ROWS[:old]] + ROWS[old:]
    assert old == 0 or rows[1]["details"] != ROWS[1]["details"]  # format 1 really differs
    store = store_rows(db_url, rows)
    try:
        with store.transaction() as session:
            report = audit.verify(session, v1_vault().audit_key())
    finally:
        store.dispose()
    assert (report.events, report.head_mac) == (len(ROWS), ROWS[-1]["mac"])


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("details", ROWS[2]["details"].replace('"kits":48', '"kits":49'), "it was altered"),
        ("details", ROWS[2]["details"].replace('"kits":48', '"kits": 49'), "it was altered"),
        ("details", ROWS[2]["details"][:-1], "details are not JSON"),
        ("subject", "exosome-MS", "it was altered"),
        ("reason", "\\", "it was altered"),
    ],
)
def test_an_altered_format2_row_is_found(
    db_url: str, column: str, value: str, message: str
) -> None:
    assert value != ROWS[2][column]
    rows = [*ROWS[:2], {**ROWS[2], column: value}, *ROWS[3:]]
    store = store_rows(db_url, rows)
    try:
        with store.transaction() as session, pytest.raises(AuditError) as caught:
            audit.verify(session, v1_vault().audit_key())
    finally:
        store.dispose()
    assert str(caught.value).startswith(f"audit trail broken at event 3: {message}")


text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@given(
    seq=st.integers(min_value=1, max_value=2**53),
    fields=st.lists(text, min_size=6, max_size=6),
    details=st.dictionaries(text, json_values, max_size=4),
)
def test_the_body_from_stored_text_is_the_canonical_body(
    seq: int, fields: list[str], details: dict[str, Any]
) -> None:
    at, user, role, action, subject, reason = fields
    assert audit.stored_body(
        seq, at, user, role, action, subject, reason, audit.details_text(details)
    ) == audit.canonical(seq, at, user, role, action, subject, reason, details)


@given(key=st.binary(max_size=130), message=st.binary(max_size=300))
def test_chain_mac_is_hmac_sha256(key: bytes, message: bytes) -> None:
    assert audit.ChainMac(key).digest(message) == hmac.digest(key, message, "sha256")
