"""Arrow schemas of the lake tables, in one place.

`bronze/messages` is the public contract: one row per message in or out, partitioned by
tenant (and by day, so retention and compaction work a day at a time). Its columns are the
fields of the message events the realtime path appends to the event log (see
realtime/events.py) plus `date`, derived from `created_at` by the writer.

Every other event (a conversation started, closed or handed off, a feedback rating, an
error) goes to `bronze/conversation_events`, one table with an `event_type` column: those
events are few, varied and read together, so one narrow table with a JSON `payload` serves
them better than a table per type.
"""

from __future__ import annotations

import pyarrow as pa

# Who and where: the first columns of every event, message or not.
_EVENT_IDENTITY = [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("tenant_id", pa.string(), nullable=False),
    pa.field("conversation_id", pa.string(), nullable=False),
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("channel", pa.string(), nullable=False),
]
_CREATED_AT = pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False)

MESSAGE_EVENT = pa.schema(
    [
        *_EVENT_IDENTITY,
        pa.field("direction", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("payload", pa.string()),
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
        _CREATED_AT,
    ]
)
CONVERSATION_EVENT = pa.schema([*_EVENT_IDENTITY, pa.field("payload", pa.string()), _CREATED_AT])
DATE = pa.field("date", pa.date32(), nullable=False)

BRONZE_MESSAGES = MESSAGE_EVENT.append(DATE)
BRONZE_CONVERSATION_EVENTS = CONVERSATION_EVENT.append(DATE)
PARTITION_BY = ["tenant_id", "date"]

# table name (under the lake root) -> (event schema, table schema)
TABLES: dict[str, tuple[pa.Schema, pa.Schema]] = {
    "bronze/messages": (MESSAGE_EVENT, BRONZE_MESSAGES),
    "bronze/conversation_events": (CONVERSATION_EVENT, BRONZE_CONVERSATION_EVENTS),
}
MESSAGES_TABLE = "bronze/messages"
CONVERSATION_EVENTS_TABLE = "bronze/conversation_events"
