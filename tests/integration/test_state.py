"""The conversation store's scripts against the real Redis."""

from __future__ import annotations

import orjson
import pytest

from chatlake.events import new_event_id
from chatlake.keyspace import TenantKeyspace, redis_client
from realtime.state import ConversationStore, StateConflict


@pytest.fixture
async def store(endpoints):
    client = redis_client(endpoints.redis_url)
    yield ConversationStore(client, ttl_seconds=600)
    await client.aclose()


async def test_a_repeated_record_appends_its_events_once(store):
    tenant_id = new_event_id()
    events = [orjson.dumps({"n": 1}), orjson.dumps({"n": 2})]
    fields = {"user_id": "u", "channel": "api", "created_at": "t0", "updated_at": "t0"}
    args = (tenant_id, "c1", "u", fields, events, 1)
    first = await store.record(*args, batch_id="batch-1")
    again = await store.record(*args, batch_id="batch-1")
    assert len(first) == 2
    assert again == []
    keys = TenantKeyspace(tenant_id)
    assert await store.redis.xlen(keys.events) == 2
    assert await store.redis.llen(keys.messages("c1")) == 2
    assert await store.redis.hget(keys.conversation("c1"), "message_count") == b"2"
    await store.record(*args, batch_id="batch-2", expected_rev="1")
    assert await store.redis.xlen(keys.events) == 4


async def test_a_record_computed_from_stale_state_is_refused(store):
    tenant_id = new_event_id()
    fields = {"user_id": "u"}
    await store.record(tenant_id, "c1", "u", fields, [b"{}"], 1, batch_id="a")
    with pytest.raises(StateConflict):
        await store.record(
            tenant_id, "c1", "u", fields, [b"{}"], 1, batch_id="b"
        )  # rev "" is stale
    assert await store.redis.xlen(TenantKeyspace(tenant_id).events) == 1


async def test_scripts_are_reloaded_after_a_script_flush(store, tenant):
    from chatlake.apikeys import parse_api_key

    await store.redis.script_flush()
    key = parse_api_key(tenant.api_key)
    admission = await store.admit(key, rate_limited=False)
    assert admission.status in ("ok", "miss")
