"""Conversation flows through the HTTP API, against the real stores."""

from __future__ import annotations

import copy

import orjson
import redis
from fastapi.testclient import TestClient

from chatlake.keyspace import TenantKeyspace
from realtime.engine.flows.engine import sample_flow
from tests.utils.factories import send


class Chat:
    """One user's conversation, message after message."""

    def __init__(self, client, tenant, user_id="alice"):
        self.client, self.tenant, self.user_id = client, tenant, user_id
        self.conversation_id = None

    def say(self, text):
        extra = {"conversation_id": self.conversation_id} if self.conversation_id else {}
        response = send(self.client, self.tenant, text, user_id=self.user_id, **extra)
        assert response.status_code == 200, response.text
        body = response.json()
        self.conversation_id = body["conversation_id"]
        return body

    def texts(self, text):
        return [r["text"] for r in self.say(text)["replies"]]


def test_every_new_tenant_has_the_sample_flow_and_its_schema_is_served(client, tenant):
    response = client.get("/v1/flow", headers=tenant.headers)
    assert response.status_code == 200
    assert response.headers["x-flow-version"] == "1"
    assert response.json() == sample_flow()
    schema = client.get("/v1/flow/schema").json()
    assert schema["title"] == "chatlake conversation flow"


def test_an_invalid_flow_is_refused_with_the_offending_place(client, tenant):
    broken = copy.deepcopy(sample_flow())
    broken["states"]["main"]["transitions"][0]["to"] = "nowhere"
    response = client.put("/v1/flow", json=broken, headers=tenant.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_flow"
    assert error["details"][0]["field"] == "$.states.main.transitions[0].to"
    shape = client.put("/v1/flow", json={"start": 3, "states": {}}, headers=tenant.headers)
    assert shape.status_code == 422
    assert {d["field"] for d in shape.json()["error"]["details"]} == {"$.start", "$.states"}
    assert client.put("/v1/flow", content=b"{nope", headers=tenant.headers).status_code == 400


def test_the_order_form_validates_reprompts_loops_and_jumps_back(client, tenant):
    chat = Chat(client, tenant)
    assert chat.texts("hello")[0].startswith("Hello!")
    assert chat.texts("where is my order?") == ["Sure, what's your order number? It has 5 digits."]
    assert chat.texts("it's 123") == [
        "That doesn't look like an order number.",
        "Sure, what's your order number? It has 5 digits.",
    ]
    assert chat.texts("12345") == [
        "Order 12345 is on its way and should arrive within 2 days.",
        "Can I help with another order?",
    ]
    # A loop: the form again, the slot cleared.
    assert chat.texts("yes") == ["Sure, what's your order number? It has 5 digits."]
    # A jump back to the start in the middle of the form.
    assert chat.texts("menu") == []
    assert chat.texts("what are your opening hours?") == [
        "We're open Monday to Friday, 9:00 to 18:00."
    ]
    # The value can come with the question itself.
    assert chat.texts("where is order 54321")[0].startswith("Order 54321 is on its way")
    assert chat.texts("no") == ["Thanks for chatting. Goodbye!"]


def test_three_invalid_answers_hand_over_to_a_person(client, tenant):
    chat = Chat(client, tenant)
    chat.say("track my order")
    chat.say("abc")
    chat.say("12")
    last = chat.say("no idea")
    assert last["handoff"] is True
    assert last["replies"][-1]["text"].startswith("I'm connecting you with a person")


def test_handoff_keeps_the_bot_quiet_until_released(client, tenant, endpoints):
    chat = Chat(client, tenant)
    body = chat.say("I want to talk to a human")
    assert body["handoff"] is True
    quiet = chat.say("hello? anyone?")
    assert quiet["handoff"] is True and quiet["replies"] == []
    conversation = client.get(f"/v1/conversations/{chat.conversation_id}", headers=tenant.headers)
    assert [m["text"] for m in conversation.json()["messages"]][-1] == "hello? anyone?"
    events = redis.Redis.from_url(endpoints.redis_url).xrange(
        TenantKeyspace(tenant.tenant_id).events
    )
    kinds = [orjson.loads(f[b"event"])["event_type"] for _, f in events]
    assert kinds.count("handoff") == 1

    released = client.post(
        f"/v1/conversations/{chat.conversation_id}/handoff/release", headers=tenant.headers
    )
    assert released.status_code == 200
    again = chat.say("hello")
    assert again["handoff"] is False and again["replies"][0]["text"].startswith("Hello!")
    missing = client.post("/v1/conversations/nope/handoff/release", headers=tenant.headers)
    assert missing.status_code == 404


def test_open_conversations_keep_their_version_and_rollback_restores_the_old(client, tenant):
    open_chat = Chat(client, tenant, "bob")
    open_chat.say("where is my order")  # waiting for the order number, on version 1
    v2 = copy.deepcopy(sample_flow())
    v2["states"]["order_found"]["say"] = "Version two: order {order_number} ships tomorrow."
    published = client.put("/v1/flow", json=v2, headers=tenant.headers)
    assert published.json() == {"version": 2}
    assert open_chat.texts("11111")[0].startswith("Order 11111 is on its way")  # still v1
    new_chat = Chat(client, tenant, "carol")
    new_chat.say("where is my order")
    assert new_chat.texts("22222")[0] == "Version two: order 22222 ships tomorrow."

    versions = client.get("/v1/flow/versions", headers=tenant.headers).json()
    assert [v["version"] for v in versions["versions"]] == [1, 2] and versions["live"] == 2
    assert client.post("/v1/flow/rollback", json={"version": 1}, headers=tenant.headers).json() == {
        "version": 1
    }
    after = Chat(client, tenant, "dave")
    after.say("where is my order")
    assert after.texts("33333")[0].startswith("Order 33333 is on its way")
    assert (
        client.post("/v1/flow/rollback", json={"version": 9}, headers=tenant.headers).status_code
        == 404
    )


def test_an_ab_split_is_deterministic_per_user_and_recorded(client, tenant):
    v2 = copy.deepcopy(sample_flow())
    v2["states"]["greeting"]["say"] = "Hi from B!"
    client.put("/v1/flow", json=v2, headers=tenant.headers)
    split = {
        "variants": [
            {"name": "A", "version": 1, "weight": 50},
            {"name": "B", "version": 2, "weight": 50},
        ]
    }
    assert client.put("/v1/flow/experiment", json=split, headers=tenant.headers).status_code == 200
    seen = {}
    for i in range(40):
        body = Chat(client, tenant, f"user-{i}").say("hello")
        seen[f"user-{i}"] = body["flow"]["variant"]
        expected = "Hi from B!" if body["flow"]["variant"] == "B" else None
        if expected:
            assert body["replies"][0]["text"] == expected
    assert set(seen.values()) == {"A", "B"}
    again = Chat(client, tenant, "user-7").say("hello")
    assert again["flow"]["variant"] == seen["user-7"]  # the same user, the same variant
    bad = {
        "variants": [
            {"name": "A", "version": 1, "weight": 60},
            {"name": "B", "version": 2, "weight": 60},
        ]
    }
    assert client.put("/v1/flow/experiment", json=bad, headers=tenant.headers).status_code == 422
    assert client.delete("/v1/flow/experiment", headers=tenant.headers).status_code == 204
    assert Chat(client, tenant, "user-1").say("hello")["flow"]["variant"] is None


def test_a_conversation_carries_on_across_an_api_restart(client, tenant, settings):
    chat = Chat(client, tenant)
    chat.say("where is my order")
    from realtime.app import create_app

    with TestClient(create_app(settings)) as restarted:  # another process, cold caches
        chat.client = restarted
        assert chat.texts("44444")[0].startswith("Order 44444 is on its way")


def test_messages_racing_in_one_conversation_lose_no_update(client, tenant):
    import threading

    chat = Chat(client, tenant)
    chat.say("hello")
    results = []

    def say(text):
        results.append(send(client, tenant, text, conversation_id=chat.conversation_id).status_code)

    threads = [threading.Thread(target=say, args=(f"opening hours {i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(200) + results.count(409) == 6 and results.count(200) >= 1
    body = client.get(f"/v1/conversations/{chat.conversation_id}", headers=tenant.headers).json()
    accepted = results.count(200) + 1
    # Every accepted turn is in the state: its messages and its count in the summary.
    assert body["summary"]["user_messages"] == accepted
    assert body["message_count"] == accepted * 2


def test_a_handoff_release_is_not_undone_by_a_message_in_flight(client, tenant, endpoints):
    from chatlake.keyspace import TenantKeyspace as Keys

    chat = Chat(client, tenant)
    chat.say("I want a human")
    state = redis.Redis.from_url(endpoints.redis_url)
    key = Keys(tenant.tenant_id).conversation(chat.conversation_id)
    rev_before = int(state.hget(key, "rev"))
    client.post(f"/v1/conversations/{chat.conversation_id}/handoff/release", headers=tenant.headers)
    assert int(state.hget(key, "rev")) == rev_before + 1
    assert orjson.loads(state.hget(key, "flow"))["handoff"] is False
