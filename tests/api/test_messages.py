"""POST /v1/messages and the conversation reads, through the app against real stores."""

from __future__ import annotations

import orjson
import redis

from chatlake.keyspace import TenantKeyspace
from tests.utils.factories import send


def _events(endpoints, tenant_id, event_type="message"):
    client = redis.Redis.from_url(endpoints.redis_url)
    entries = client.xrange(TenantKeyspace(tenant_id).events)
    events = [orjson.loads(fields[b"event"]) for _, fields in entries]
    return [e for e in events if e["event_type"] == event_type]


def test_a_message_gets_a_reply_in_the_contract_shape(client, tenant):
    response = send(client, tenant, "hello")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {
        "conversation_id",
        "message_id",
        "replies",
        "intent",
        "handoff",
        "answered_by",
    }
    assert body["replies"][0]["type"] == "text"
    assert body["replies"][0]["text"].startswith("Hello!")
    assert body["intent"] is None  # no intent model trained yet: the flow's patterns answer
    assert body["handoff"] is False
    assert body["answered_by"] == {"tier": "flow"}
    assert body["flow"] == {"version": 1, "variant": None}


def test_unrecognised_text_has_no_intent_but_still_a_reply(client, tenant):
    body = send(client, tenant, "zxqv wibble").json()
    assert body["intent"] is None
    assert body["replies"][0]["text"]
    assert body["answered_by"] == {"tier": "rules"}  # the reply chain's last resort


def test_each_message_in_and_out_is_one_event(client, tenant, endpoints):
    first = send(client, tenant, "hello", channel="web", language="en").json()
    second = send(
        client,
        tenant,
        "",
        type="location",
        payload={"lat": 52.5, "lon": 13.4},
        conversation_id=first["conversation_id"],
    ).json()
    events = _events(endpoints, tenant.tenant_id)
    assert [(e["direction"], e["type"]) for e in events] == [
        ("in", "text"),
        ("out", "text"),
        ("in", "location"),
        ("out", "text"),
    ]
    assert len({e["event_id"] for e in events}) == 4
    inbound = events[0]
    assert inbound["event_id"] == first["message_id"]
    assert inbound["tenant_id"] == tenant.tenant_id
    assert inbound["user_id"] == "alice"
    assert inbound["channel"] == "web"
    assert inbound["language"] == "en"
    assert inbound["flow_version"] == 1
    outbound = events[1]
    assert outbound["event_id"] == first["replies"][0]["message_id"]
    assert outbound["tier"] == "flow"
    assert outbound["latency_ms"] >= 0
    assert events[2]["event_id"] == second["message_id"]
    assert orjson.loads(events[2]["payload"]) == {"lat": 52.5, "lon": 13.4}
    # The conversation's start is an event of its own, once, in the stream only.
    [started] = _events(endpoints, tenant.tenant_id, "conversation_started")
    assert started["conversation_id"] == first["conversation_id"]
    assert started["user_id"] == "alice"


def test_a_conversation_continues_and_reads_back_oldest_first(client, tenant):
    first = send(client, tenant, "hello").json()
    conversation_id = first["conversation_id"]
    send(client, tenant, "thanks", conversation_id=conversation_id)
    response = client.get(f"/v1/conversations/{conversation_id}", headers=tenant.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "alice"
    assert body["message_count"] == 4
    assert [m["direction"] for m in body["messages"]] == ["in", "out", "in", "out"]
    assert [m["text"] for m in body["messages"][::2]] == ["hello", "thanks"]
    stamps = [m["created_at"] for m in body["messages"]]
    assert stamps == sorted(stamps)


def test_a_users_conversations_are_listed_most_recent_first(client, tenant):
    older = send(client, tenant, "hello").json()["conversation_id"]
    newer = send(client, tenant, "hello").json()["conversation_id"]
    send(client, tenant, "hi", user_id="bob")
    response = client.get("/v1/conversations", params={"user_id": "alice"}, headers=tenant.headers)
    assert response.status_code == 200
    listed = [c["conversation_id"] for c in response.json()["conversations"]]
    assert listed == [newer, older]


def test_conversation_state_has_the_configured_ttl(client, tenant, endpoints, settings):
    conversation_id = send(client, tenant).json()["conversation_id"]
    keys = TenantKeyspace(tenant.tenant_id)
    ttl = redis.Redis.from_url(endpoints.redis_url).ttl(keys.conversation(conversation_id))
    assert settings.conversation_ttl_seconds - 60 < ttl <= settings.conversation_ttl_seconds


def test_a_conversation_of_another_user_is_refused(client, tenant):
    conversation_id = send(client, tenant).json()["conversation_id"]
    response = send(client, tenant, "hi", user_id="mallory", conversation_id=conversation_id)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conversation_user_mismatch"


def test_a_long_conversation_keeps_a_bounded_window_and_a_summary(client, tenant, endpoints):
    conversation_id = send(client, tenant, "hello").json()["conversation_id"]
    for i in range(40):
        send(client, tenant, f"what are your opening hours {i}", conversation_id=conversation_id)
    body = client.get(f"/v1/conversations/{conversation_id}", headers=tenant.headers).json()
    assert body["message_count"] == 82
    assert len(body["messages"]) == 50  # the window; the lake keeps every message
    assert body["messages"][-1]["direction"] == "out"
    summary = body["summary"]
    assert summary["messages"] == 82 and summary["user_messages"] == 41
    assert summary["first_user_message"] == "hello"
    assert summary["recent_topics"][-1] == "what are your opening hours 39"
    state = redis.Redis.from_url(endpoints.redis_url)
    keys = TenantKeyspace(tenant.tenant_id)
    assert state.llen(keys.messages(conversation_id)) == 50
    assert len(state.hget(keys.conversation(conversation_id), "summary")) < 2000
