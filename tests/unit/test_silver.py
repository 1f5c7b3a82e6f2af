"""bronze -> silver: cleaning, masking, pseudonyms, fallbacks, one first reply per turn."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from lake.schemas import (
    BRONZE_CONVERSATION_EVENTS,
    BRONZE_MESSAGES,
    SILVER_CONVERSATION_EVENTS,
    SILVER_TURNS,
)
from lake.silver import events_from_bronze, turns_from_bronze

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
    assert silver.schema == SILVER_TURNS
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


# Silver's schemas as the existing silver tables were written (names, order, types,
# nullability): lake/schemas.py derives them from bronze, and must keep deriving these.
_CREATED_AT = pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False)
_DATE = pa.field("date", pa.date32(), nullable=False)
SILVER_TURNS_AS_DEPLOYED = pa.schema([
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("tenant_id", pa.string(), nullable=False),
    pa.field("conversation_id", pa.string(), nullable=False),
    pa.field("user_key", pa.string(), nullable=False),
    pa.field("channel", pa.string(), nullable=False),
    pa.field("direction", pa.string(), nullable=False),
    pa.field("type", pa.string(), nullable=False),
    pa.field("text", pa.string()),
    pa.field("pii_found", pa.int32(), nullable=False),
    pa.field("language", pa.string()),
    pa.field("intent", pa.string()),
    pa.field("confidence", pa.float64()),
    pa.field("tier", pa.string()),
    pa.field("provider", pa.string()),
    pa.field("model", pa.string()),
    pa.field("latency_ms", pa.float64()),
    pa.field("flow_version", pa.int64()),
    pa.field("variant", pa.string()),
    pa.field("model_version", pa.int64()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("cost_usd", pa.float64()),
    pa.field("is_fallback", pa.bool_(), nullable=False),
    pa.field("is_first_reply", pa.bool_(), nullable=False),
    _CREATED_AT,
    _DATE,
])  # fmt: skip
SILVER_CONVERSATION_EVENTS_AS_DEPLOYED = pa.schema([
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("tenant_id", pa.string(), nullable=False),
    pa.field("conversation_id", pa.string(), nullable=False),
    pa.field("user_key", pa.string(), nullable=False),
    pa.field("channel", pa.string(), nullable=False),
    pa.field("payload", pa.string()),
    _CREATED_AT,
    _DATE,
])  # fmt: skip


def test_silver_schemas_are_the_deployed_ones():
    assert SILVER_TURNS.equals(SILVER_TURNS_AS_DEPLOYED, check_metadata=True)
    assert SILVER_CONVERSATION_EVENTS.equals(
        SILVER_CONVERSATION_EVENTS_AS_DEPLOYED, check_metadata=True
    )


def test_conversation_events_keep_their_payload_under_the_pseudonym():
    rows = pa.Table.from_pylist(
        [{"event_id": "e1", "event_type": "conversation_started", "tenant_id": "t1",
          "conversation_id": "c1", "user_id": "ana@example.com", "channel": "web",
          "payload": '{"flow": 2}', "created_at": T0, "date": date(2026, 11, 20)}],
        schema=BRONZE_CONVERSATION_EVENTS,
    )  # fmt: skip
    silver = events_from_bronze(rows, "pseudonym-key")
    assert silver.schema == SILVER_CONVERSATION_EVENTS
    [row] = silver.to_pylist()
    assert row["payload"] == '{"flow": 2}' and len(row["user_key"]) == 32
    assert "ana" not in row["user_key"]
