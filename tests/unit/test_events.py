from datetime import UTC, datetime

import orjson
import pyarrow as pa

from lake.schemas import BRONZE_MESSAGES, CONVERSATION_EVENT, MESSAGE_EVENT
from realtime.events import ConversationEvent, MessageEvent, encode, message_event


def test_events_have_exactly_the_columns_of_their_lake_tables():
    assert list(MessageEvent.__annotations__) == MESSAGE_EVENT.names
    assert list(ConversationEvent.__annotations__) == CONVERSATION_EVENT.names
    assert BRONZE_MESSAGES.names == [*MESSAGE_EVENT.names, "date"]


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
