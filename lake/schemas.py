"""Arrow schemas of the lake tables, in one place.

`bronze/messages` is the public contract: one row per message in or out, partitioned by
tenant. Its columns are exactly the fields of the message events that the realtime path
appends to the event log (see realtime/events.py), so ingest is a straight copy.
"""

from __future__ import annotations

import pyarrow as pa

BRONZE_MESSAGES = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("conversation_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
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
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
BRONZE_MESSAGES_PARTITION_BY = ["tenant_id"]
