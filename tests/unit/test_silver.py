"""bronze -> silver: cleaning, masking, pseudonyms, fallbacks, one first reply per turn."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from lake.schemas import BRONZE_MESSAGES
from lake.silver import TURNS_SCHEMA, turns_from_bronze

T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)


def bronze(*rows: dict) -> pa.Table:
    base = {"event_type": "message", "tenant_id": "t1", "conversation_id": "c1",
            "user_id": "ana@example.com", "channel": "web", "type": "text",
            "date": date(2026, 11, 20)}  # fmt: skip
    full = [{**base, **row} for row in rows]
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in BRONZE_MESSAGES.names} for row in full],
        schema=BRONZE_MESSAGES,
    )


def test_turns_are_cleaned_masked_and_pseudonymized():
    rows = bronze(
        {"event_id": "e1", "direction": "in", "text": "  my\u00a0card  4111 1111 1111 1111 ",
         "created_at": T0},
        {"event_id": "e2", "direction": "out", "text": "Sorry?", "tier": "rules",
         "latency_ms": 3.0, "created_at": T0 + timedelta(milliseconds=3)},
        {"event_id": "e3", "direction": "out", "text": "Try again.", "tier": "rules",
         "latency_ms": 3.0, "created_at": T0 + timedelta(milliseconds=3)},
        {"event_id": "e1", "direction": "in", "text": "duplicate delivery", "created_at": T0},
        {"event_id": "e4", "direction": "in", "text": "   ", "created_at": T0,
         "user_id": "ben"},
    )  # fmt: skip
    silver = turns_from_bronze(rows, "pseudonym-key")
    assert silver.schema == TURNS_SCHEMA
    by_id = {row["event_id"]: row for row in silver.to_pylist()}
    assert list(by_id) == ["e1", "e2", "e3", "e4"]  # the duplicate delivery is gone
    assert by_id["e1"]["text"] == "my card [CARD]" and by_id["e1"]["pii_found"] == 1
    assert by_id["e4"]["text"] is None
    assert by_id["e1"]["user_key"] == by_id["e2"]["user_key"] != by_id["e4"]["user_key"]
    assert "ana" not in by_id["e1"]["user_key"]
    assert [by_id[e]["is_fallback"] for e in ("e1", "e2", "e3")] == [False, True, True]
    # the turn's two replies share its timestamp: exactly one carries the turn's latency
    assert [by_id[e]["is_first_reply"] for e in ("e1", "e2", "e3")] == [False, True, False]


def test_pseudonyms_depend_on_the_key():
    rows = bronze({"event_id": "e1", "direction": "in", "text": "hi", "created_at": T0})
    one = turns_from_bronze(rows, "key-one")["user_key"][0].as_py()
    two = turns_from_bronze(rows, "key-two")["user_key"][0].as_py()
    assert one != two and len(one) == 32
