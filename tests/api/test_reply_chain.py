"""The reply chain through the API, with an OpenAI-compatible provider on loopback."""

from __future__ import annotations

import pytest

from tests.utils.factories import send
from tests.utils.loopback import ScriptedServer, chat_completion, streamed


@pytest.fixture
def provider():
    server = ScriptedServer()
    yield server
    server.close()


def use_chain(client, tenant, provider, **tier):
    tier = {"provider": "openai_compatible", "model": "tiny-llm",
            "base_url": provider.url + "/v1", "api_key": "sk-loop", **tier}  # fmt: skip
    chain = {"tiers": [tier]}
    assert client.put("/v1/model-chain", json=chain, headers=tenant.headers).status_code == 200


def test_an_unmatched_message_is_answered_by_the_llm_tier(client, tenant, provider):
    use_chain(client, tenant, provider)
    provider.script.append((200, chat_completion("We open at nine."), {}))
    body = send(client, tenant, "zxqv can you help me with something odd").json()
    assert body["answered_by"] == {
        "tier": "llm",
        "provider": "openai_compatible",
        "model": "tiny-llm",
    }
    assert body["replies"][0]["text"] == "We open at nine."
    request = provider.requests[-1]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-loop"
    assert request["body"]["model"] == "tiny-llm"
    assert request["body"]["messages"][-1] == {
        "role": "user",
        "content": "zxqv can you help me with something odd",
    }


def test_a_429_with_retry_after_is_retried(client, tenant, provider):
    use_chain(client, tenant, provider)
    provider.script += [
        (429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
        (200, chat_completion("Second time lucky."), {}),
    ]
    body = send(client, tenant, "zxqv something only a model knows").json()
    assert body["replies"][0]["text"] == "Second time lucky."
    assert len(provider.requests) == 2


@pytest.mark.parametrize(
    "failure",
    [
        (500, {"error": {"message": "boom"}}, {}),
        (401, {"error": {"message": "bad key"}}, {}),
        (200, b"{not json", {}),
        (200, {"choices": []}, {}),
    ],
)
def test_a_failing_provider_falls_through_to_rules(client, tenant, provider, failure):
    use_chain(client, tenant, provider)
    provider.default = failure
    body = send(client, tenant, "zxqv no provider can answer this").json()
    assert body["answered_by"] == {"tier": "rules"}
    assert body["replies"][0]["text"]  # never an empty reply


def test_the_breaker_opens_half_opens_and_closes(client, tenant, provider):
    import time

    breaker = client.app.state.platform.replies.breaker
    use_chain(client, tenant, provider)
    tier = "openai_compatible:tiny-llm"
    provider.default = (500, {"error": {"message": "down"}}, {})
    for _ in range(breaker.failures):
        assert send(client, tenant, "zxqv are you there").json()["answered_by"]["tier"] == "rules"
    state = client.portal.call(breaker.state, tenant.tenant_id, tier)
    assert state == "open"
    calls = len(provider.requests)
    assert send(client, tenant, "zxqv still there").json()["answered_by"]["tier"] == "rules"
    assert len(provider.requests) == calls  # open: the tier is skipped, not called

    breaker.cooldown_s = 0.3
    try:
        time.sleep(0.4)
        assert client.portal.call(breaker.state, tenant.tenant_id, tier) == "half_open"
        provider.script.append((200, chat_completion("Back again."), {}))
        body = send(client, tenant, "zxqv hello again").json()
        assert body["answered_by"]["tier"] == "llm" and len(provider.requests) == calls + 1
        assert client.portal.call(breaker.state, tenant.tenant_id, tier) == "closed"
    finally:
        breaker.cooldown_s = 30.0


def test_an_identical_prompt_is_answered_from_the_cache(client, tenant, provider):
    use_chain(client, tenant, provider)
    provider.script.append((200, chat_completion("Cached wisdom."), {}))
    first = send(client, tenant, "zxqv what is the meaning of it all", user_id="u1").json()
    calls = len(provider.requests)
    second = send(client, tenant, "zxqv what is the meaning of it all", user_id="u2").json()
    assert second["replies"][0]["text"] == first["replies"][0]["text"] == "Cached wisdom."
    assert second["answered_by"]["tier"] == "llm"
    assert len(provider.requests) == calls  # served from Redis, not the provider


def test_reply_events_record_tokens_and_cost(client, tenant, provider, endpoints, monkeypatch):
    import orjson
    import redis

    from chatlake.keyspace import TenantKeyspace

    monkeypatch.setitem(client.app.state.platform.replies.prices, "tiny-llm", (1.0, 2.0))
    use_chain(client, tenant, provider)
    provider.script.append((200, chat_completion("Priced answer."), {}))
    body = send(client, tenant, "zxqv what does this cost").json()
    events = redis.Redis.from_url(endpoints.redis_url).xrange(
        TenantKeyspace(tenant.tenant_id).events
    )
    out = next(
        e
        for e in (orjson.loads(f[b"event"]) for _, f in events)
        if e.get("event_id") == body["replies"][0]["message_id"]
    )
    assert (out["tier"], out["provider"], out["model"]) == ("llm", "openai_compatible", "tiny-llm")
    assert (out["prompt_tokens"], out["completion_tokens"]) == (12, 5)
    assert out["cost_usd"] == round((12 * 1.0 + 5 * 2.0) / 1_000_000, 8)
    assert out["latency_ms"] > 0


def test_the_chain_falls_through_every_provider_to_knowledge_then_rules(client, tenant):
    """anthropic (5xx) → gemini (bad key) → huggingface streaming (answers); then with every
    provider down, the knowledge tier; then, for a question no document covers, rules."""
    servers = [ScriptedServer() for _ in range(3)]
    try:
        anthropic, gemini, hf = servers
        anthropic.default = (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            {},
        )
        gemini.default = (400, {"error": {"code": 400, "message": "API key not valid",
                                          "status": "INVALID_ARGUMENT"}}, {})  # fmt: skip
        tiers = [
            {"provider": "anthropic", "model": "claude-x", "base_url": anthropic.url,
             "api_key": "sk-ant"},
            {"provider": "gemini", "model": "gemini-x", "base_url": gemini.url, "api_key": "g"},
            {"provider": "huggingface", "model": "tgi", "base_url": hf.url, "stream": True},
        ]  # fmt: skip
        response = client.put("/v1/model-chain", json={"tiers": tiers}, headers=tenant.headers)
        assert response.status_code == 200, response.text
        assert response.json()["tiers"][2]["stream"] is True
        hf.script.append((200, streamed("huggingface", ["Par", "cels ", "ship daily."]), {}))
        body = send(client, tenant, "zxqv when do parcels leave").json()
        assert body["answered_by"] == {"tier": "llm", "provider": "huggingface", "model": "tgi"}
        assert body["replies"][0]["text"] == "Parcels ship daily."
        assert (len(anthropic.requests), len(gemini.requests)) == (3, 1)  # 5xx retried, 400 not
        assert anthropic.requests[0]["headers"]["x-api-key"] == "sk-ant"

        doc = {"title": "Payment", "text": "We accept Visa, PayPal and bank transfer."}
        client.post("/v1/knowledge/documents", headers=tenant.headers, json=doc)
        hf.default = (503, {"error": "Model is currently loading", "estimated_time": 20.0}, {})
        body = send(client, tenant, "can I pay with paypal?").json()
        assert body["answered_by"] == {"tier": "knowledge"}
        assert "PayPal" in body["replies"][0]["text"]
        body = send(client, tenant, "zxqv wibble blorp").json()
        assert body["answered_by"] == {"tier": "rules"} and body["replies"][0]["text"]
    finally:
        for server in servers:
            server.close()


def test_azure_and_compatible_tiers_need_a_base_url(client, tenant):
    for provider in ("azure_openai", "openai_compatible"):
        chain = {"tiers": [{"provider": provider, "model": "m"}]}
        response = client.put("/v1/model-chain", json=chain, headers=tenant.headers)
        assert response.status_code == 422 and "base_url" in response.text
