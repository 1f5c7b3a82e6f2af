"""Conversation state and events survive a restart of Redis (AOF, fsync every second)."""

from __future__ import annotations

import redis

from chatlake.keyspace import TenantKeyspace
from tests.utils.factories import send


def test_state_and_events_survive_a_redis_restart(client, tenant, services, endpoints):
    first = send(client, tenant, "hello").json()
    conversation_id = first["conversation_id"]
    send(client, tenant, "thanks", conversation_id=conversation_id)
    events_key = TenantKeyspace(tenant.tenant_id).events
    events_before = redis.Redis.from_url(endpoints.redis_url).xlen(events_key)
    old_pid = services.status()["redis"]["pid"]

    assert services.redis.stop() is True
    services.redis.start()
    assert services.status()["redis"]["pid"] != old_pid

    # The app's client reconnects by itself; the conversation and the events are back.
    response = client.get(f"/v1/conversations/{conversation_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert [m["text"] for m in response.json()["messages"] if m["direction"] == "in"] == [
        "hello",
        "thanks",
    ]
    assert redis.Redis.from_url(endpoints.redis_url).xlen(events_key) == events_before
    # ... and the conversation carries on where it was.
    follow_up = send(client, tenant, "bye", conversation_id=conversation_id)
    assert follow_up.status_code == 200
    assert (
        client.get(f"/v1/conversations/{conversation_id}", headers=tenant.headers).json()[
            "message_count"
        ]
        == 6
    )
