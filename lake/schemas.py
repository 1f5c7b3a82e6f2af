"""Every lake table's name and Arrow schema, bronze and silver, in one place.

Bronze holds the events as the realtime path appended them to the event log:
- `bronze/messages` (part of the public contract): one row per message in or out;
- `bronze/conversation_events`: every other event of a conversation (started, handed off,
  …), one table with an `event_type` column: those events are few, varied and read
  together, so one narrow table with a JSON `payload` serves them better than a table per
  type.
Their columns are the fields of the event contract, `MessageEvent` and `ConversationEvent`
in chatlake/events.py, which is their only declaration: the event schemas here are derived
from those TypedDicts (names and order as declared; `str` is a string, `int` an int64,
`float` a float64, a `Literal` of strings a string, a field marked `UtcTimestamp` a UTC
timestamp in microseconds; `X | None` is nullable, any other field is not). Each bronze
table adds `date`, derived from `created_at` by ingest (lake/ingest.py).

Silver (built by lake/silver.py, a range of days at a time):
- `silver/turns`: bronze messages cleaned, with `user_id` replaced by the pseudonym
  `user_key`, `event_type` and `payload` dropped, and `pii_found`, `is_fallback` and
  `is_first_reply` added;
- `silver/conversation_events`: bronze conversation events with `user_key` for `user_id`.

All four tables are partitioned by tenant and day (`PARTITION_BY`): readers open one
tenant's files only, and retention and erasure rewrite only the partitions they concern.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import pyarrow as pa

from chatlake.events import ConversationEvent, MessageEvent, UtcTimestamp

MESSAGES_TABLE = "bronze/messages"
CONVERSATION_EVENTS_TABLE = "bronze/conversation_events"
TURNS_TABLE = "silver/turns"
SILVER_CONVERSATION_EVENTS_TABLE = "silver/conversation_events"
PARTITION_BY = ["tenant_id", "date"]

_ARROW_TYPES: dict[Any, pa.DataType] = {str: pa.string(), int: pa.int64(), float: pa.float64()}


def _arrow_field(name: str, hint: Any) -> pa.Field:
    """The Arrow field of one event field, from its type hint (extras included)."""
    nullable = False
    if get_origin(hint) in (Union, types.UnionType):
        members = [m for m in get_args(hint) if m is not type(None)]
        if len(members) != 1:
            raise TypeError(f"event field {name!r}: only `X | None` unions map to Arrow")
        hint, nullable = members[0], True
    markers: tuple[Any, ...] = ()
    if get_origin(hint) is Annotated:
        hint, *extras = get_args(hint)
        markers = tuple(extras)
    if UtcTimestamp in markers:
        if hint is not str:
            raise TypeError(f"event field {name!r}: a UtcTimestamp travels as a str")
        arrow_type = pa.timestamp("us", tz="UTC")
    elif get_origin(hint) is Literal and all(isinstance(v, str) for v in get_args(hint)):
        arrow_type = pa.string()
    elif hint in _ARROW_TYPES:
        arrow_type = _ARROW_TYPES[hint]
    else:
        raise TypeError(f"event field {name!r}: no Arrow type for {hint!r}")
    return pa.field(name, arrow_type, nullable=nullable)


def event_schema(event: type) -> pa.Schema:
    """The Arrow schema of an event TypedDict of chatlake/events.py: its fields in order."""
    hints = get_type_hints(event, include_extras=True)
    return pa.schema([_arrow_field(name, hint) for name, hint in hints.items()])


MESSAGE_EVENT = event_schema(MessageEvent)
CONVERSATION_EVENT = event_schema(ConversationEvent)
DATE = pa.field("date", pa.date32(), nullable=False)

BRONZE_MESSAGES = MESSAGE_EVENT.append(DATE)
BRONZE_CONVERSATION_EVENTS = CONVERSATION_EVENT.append(DATE)

_USER_KEY = pa.field("user_key", pa.string(), nullable=False)
_TURNS_ADDED_BEFORE = {  # silver's own columns, each placed before the bronze column named
    "language": [pa.field("pii_found", pa.int32(), nullable=False)],
    "created_at": [
        pa.field("is_fallback", pa.bool_(), nullable=False),
        pa.field("is_first_reply", pa.bool_(), nullable=False),
    ],
}


def _silver_turns(bronze: pa.Schema) -> pa.Schema:
    """Bronze's columns with `user_id` replaced by `user_key`, `event_type` and `payload`
    (free-form, may hold anything) dropped, and silver's own columns added."""
    fields = []
    for field in bronze:
        fields += _TURNS_ADDED_BEFORE.get(field.name, [])
        if field.name == "user_id":
            fields.append(_USER_KEY)
        elif field.name not in ("event_type", "payload"):
            fields.append(field)
    return pa.schema(fields)


SILVER_TURNS = _silver_turns(BRONZE_MESSAGES)
SILVER_CONVERSATION_EVENTS = pa.schema(
    [_USER_KEY if f.name == "user_id" else f for f in BRONZE_CONVERSATION_EVENTS]
)

# bronze table -> (the schema of the events that land in it, the table's schema)
BRONZE_TABLES: dict[str, tuple[pa.Schema, pa.Schema]] = {
    MESSAGES_TABLE: (MESSAGE_EVENT, BRONZE_MESSAGES),
    CONVERSATION_EVENTS_TABLE: (CONVERSATION_EVENT, BRONZE_CONVERSATION_EVENTS),
}
# silver table -> its schema
SILVER_TABLES: dict[str, pa.Schema] = {
    TURNS_TABLE: SILVER_TURNS,
    SILVER_CONVERSATION_EVENTS_TABLE: SILVER_CONVERSATION_EVENTS,
}
# every lake table, bronze then silver -> its schema
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    **{name: table for name, (_, table) in BRONZE_TABLES.items()},
    **SILVER_TABLES,
}
