from datetime import UTC, datetime

import orjson
import pyarrow as pa

from lake.schemas import BRONZE_MESSAGES
from realtime.events import MessageEvent, encode, message_event


def test_message_events_have_exactly_the_bronze_columns():
    assert list(MessageEvent.__annotations__) == BRONZE_MESSAGES.names


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
    table = pa.Table.from_pylist([row], schema=BRONZE_MESSAGES)
    assert table.num_rows == 1
    assert orjson.loads(table.column("payload")[0].as_py()) == {"lat": 1.5, "lon": 2.5}
    assert event["event_type"] == "message"
    assert len(event["event_id"]) == 32
