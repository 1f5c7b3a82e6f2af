import subprocess
import sys
from datetime import UTC, datetime
from typing import Annotated, Literal, TypedDict

import orjson
import pyarrow as pa
import pytest

from chatlake.events import (
    ConversationEvent,
    MessageEvent,
    UtcTimestamp,
    encode,
    message_event,
)
from lake.schemas import (
    BRONZE_CONVERSATION_EVENTS,
    BRONZE_MESSAGES,
    CONVERSATION_EVENT,
    MESSAGE_EVENT,
    event_schema,
)

# The lake's event schemas as they were declared by hand before they were derived from the
# contract (chatlake/events.py): the existing Delta tables were created with exactly these,
# so a change to the contract that changes them (a type, a nullability, the order) fails.
_IDENTITY = [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("tenant_id", pa.string(), nullable=False),
    pa.field("conversation_id", pa.string(), nullable=False),
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("channel", pa.string(), nullable=False),
]
_CREATED_AT = pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False)
_DATE = pa.field("date", pa.date32(), nullable=False)
MESSAGE_EVENT_AS_DEPLOYED = pa.schema(
    [
        *_IDENTITY,
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
CONVERSATION_EVENT_AS_DEPLOYED = pa.schema(
    [*_IDENTITY, pa.field("payload", pa.string()), _CREATED_AT]
)


def _fields(schema: pa.Schema) -> list[tuple[str, pa.DataType, bool]]:
    return [(f.name, f.type, f.nullable) for f in schema]


def test_the_lake_event_schemas_derived_from_the_contract_are_the_deployed_ones():
    assert _fields(MESSAGE_EVENT) == _fields(MESSAGE_EVENT_AS_DEPLOYED)
    assert MESSAGE_EVENT.equals(MESSAGE_EVENT_AS_DEPLOYED, check_metadata=True)
    assert _fields(CONVERSATION_EVENT) == _fields(CONVERSATION_EVENT_AS_DEPLOYED)
    assert CONVERSATION_EVENT.equals(CONVERSATION_EVENT_AS_DEPLOYED, check_metadata=True)
    assert BRONZE_MESSAGES.equals(MESSAGE_EVENT_AS_DEPLOYED.append(_DATE), check_metadata=True)
    assert BRONZE_CONVERSATION_EVENTS.equals(
        CONVERSATION_EVENT_AS_DEPLOYED.append(_DATE), check_metadata=True
    )


def test_events_have_exactly_the_columns_of_their_lake_tables():
    assert list(MessageEvent.__annotations__) == MESSAGE_EVENT.names
    assert list(ConversationEvent.__annotations__) == CONVERSATION_EVENT.names
    assert BRONZE_MESSAGES.names == [*MESSAGE_EVENT.names, "date"]


def test_a_contract_type_without_an_arrow_type_is_refused():
    class Listed(TypedDict):
        tags: list[str]

    class Mixed(TypedDict):
        value: int | str | None

    class Numbered(TypedDict):
        level: Literal[1, 2]

    class Stamped(TypedDict):
        at: Annotated[int, UtcTimestamp]

    for event in (Listed, Mixed, Numbered, Stamped):
        with pytest.raises(TypeError):
            event_schema(event)


def test_an_event_round_trips_into_a_bronze_row():
    event = message_event(
        tenant_id="t",
        conversation_id="c",
        user_id="u",
        channel="web",
        direction="in",
        type="location",
        text="",
        payload={"lat": 1.5, "lon": 2.5},
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    row = orjson.loads(encode(event))
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    table = pa.Table.from_pylist([row], schema=MESSAGE_EVENT)
    assert table.num_rows == 1
    assert orjson.loads(table.column("payload")[0].as_py()) == {"lat": 1.5, "lon": 2.5}
    assert event["event_type"] == "message"
    assert len(event["event_id"]) == 32


def test_the_contract_loads_no_arrow():
    probe = "import sys, chatlake.events; print(sorted(m for m in sys.modules if 'arrow' in m))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == "[]"
