"""One tenant must not hurt another (or itself) on the realtime hot path: flow patterns that
cannot stall the event loop, a budget per source of messages (the public widget key cannot
starve the tenant's webhooks or API), webhooks over budget kept and answered later, and
unauthenticated callers kept away from PostgreSQL. Against the real stores."""

from __future__ import annotations

import copy
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import orjson
import pytest

from chatlake.apikeys import new_api_key
from chatlake.keyspace import TenantKeyspace
from realtime.channels.dispatch import _remember_choices
from realtime.engine.flows.engine import sample_flow
from realtime.engine.replies import Rendered
from tests.api.test_channels import (
    AUTH_TOKEN,
    RICH_FLOW,
    configure,
    eventually,
    post_meta,
    provider,  # noqa: F401 (a fixture)
    whatsapp_config,
)
from tests.utils import channel_samples as samples
from tests.utils.channels import twilio_headers
from tests.utils.factories import create_tenant, send

CATASTROPHIC = "^(a+)+$"  # exponential on a backtracking engine, linear on RE2


@contextmanager
def from_address(client, host):
    """Requests of the block come from `host` (each test its own: failures are counted
    per address, and the session's client is shared)."""
    transport = client._transport
    saved = transport.client
    transport.client = (host, 40000)
    try:
        yield
    finally:
        transport.client = saved


def fresh_address():
    return f"198.51.100.{secrets.randbelow(250) + 1}-{uuid.uuid4().hex[:6]}"


def pg_requests(client):
    """Connections the API asked its PostgreSQL pool for, so far (one per transaction)."""
    return client.app.state.platform.pool.get_stats().get("requests_num", 0)


# Flow patterns


def test_a_pattern_re2_cannot_run_is_refused_naming_its_place(client, tenant):
    flow = copy.deepcopy(sample_flow())
    flow["states"]["main"]["transitions"][0]["when"] = {"pattern": r"^(a+)+\1$"}
    flow["states"]["main"]["slot"] = {"name": "x", "prompt": "?", "pattern": "(?=a)a"}
    response = client.put("/v1/flow", json=flow, headers=tenant.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_flow"
    problems = {d["field"]: d["problem"] for d in error["details"]}
    assert set(problems) == {
        "$.states.main.transitions[0].when.pattern",
        "$.states.main.slot.pattern",
    }
    assert all("RE2" in problem for problem in problems.values())
    assert client.get("/v1/flow", headers=tenant.headers).headers["x-flow-version"] == "1"


@pytest.fixture
def api_process(services):
    """The API in a process of its own, on the session's stores: a regular expression that
    backtracks holds the GIL, so only a client outside the process can wait it out."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "--factory", "realtime.app:create_app",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "no API"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        process.kill()  # a stalled one does not answer SIGTERM
        process.wait(timeout=30)


def test_a_published_flow_cannot_stall_another_tenants_request(
    client, tenant, other_tenant, api_process
):
    flow = copy.deepcopy(sample_flow())
    flow["states"]["main"]["transitions"].insert(
        0, {"when": {"pattern": CATASTROPHIC}, "to": flow["start"]}
    )
    assert client.put("/v1/flow", json=flow, headers=tenant.headers).status_code == 200

    def post(who, text):
        return httpx.post(f"{api_process}/v1/messages", json={"user_id": "u", "text": text},
                          headers=who.headers, timeout=30)  # fmt: skip

    pool = ThreadPoolExecutor(2)
    try:
        evil = pool.submit(post, tenant, "a" * 35 + "!")
        time.sleep(0.2)  # (its turn first; the assertions do not depend on it)
        victim = pool.submit(post, other_tenant, "hello")
        # bounded waits: on a backtracking engine the first message holds the API's event
        # loop (and so the other tenant's request) for hours
        assert victim.result(timeout=60).status_code == 200
        assert evil.result(timeout=60).status_code == 200
    finally:
        pool.shutdown(wait=False)
    # the pattern still works as a pattern
    assert post(tenant, "aaaa").json()["answered_by"]["tier"] == "flow"


# A budget per source


def test_a_widget_flood_leaves_the_tenants_webhooks_and_api_answered(
    client,
    admin_headers,
    provider,  # noqa: F811
):
    tenant = create_tenant(client, admin_headers, rate_limit=5)
    widget = configure(client, tenant, "web", {}, allowed_origins=["https://shop.example"])
    whatsapp_config(client, tenant, provider)
    configure(client, tenant, "twilio", {"account_sid": "AC1", "auth_token": AUTH_TOKEN}, provider)
    url = f"/v1/channels/web/{tenant.tenant_id}"
    headers = {"Origin": "https://shop.example", "X-Widget-Key": widget["widget_key"]}
    with from_address(client, fresh_address()):
        statuses = [
            client.post(url, json={"visitor_id": f"visitor{i:012d}", "text": "hi"}, headers=headers)
            for i in range(8)
        ]
    assert [r.status_code for r in statuses[:5]] == [200] * 5
    assert statuses[-1].status_code == 429 and int(statuses[-1].headers["retry-after"]) >= 1
    # the flood drained the widget's budget only
    payload = samples.whatsapp({"id": "wamid.flood1", "type": "text", "text": {"body": "hello"}})
    answered = post_meta(client, "whatsapp", tenant, payload)
    assert answered.status_code == 200 and answered.json() == {"received": 1, "answered": 1}
    provider.wait_for(1, "/messages")
    sms_url = f"http://testserver/v1/channels/twilio/{tenant.tenant_id}"
    form = samples.twilio_sms("hello", sid="SM0000000000000000000000000000flood")
    assert client.post(
        sms_url, data=form, headers=twilio_headers(AUTH_TOKEN, sms_url, form)
    ).is_success
    [sms] = provider.wait_for(1, "/Messages.json")
    assert sms["form"]["Body"].startswith("Hello!")
    assert send(client, tenant, "hello").status_code == 200


def test_one_widget_visitor_cannot_use_up_the_widget(client, admin_headers):
    tenant = create_tenant(client, admin_headers, rate_limit=100)
    widget = configure(client, tenant, "web", {}, allowed_origins=["https://shop.example"])
    url = f"/v1/channels/web/{tenant.tenant_id}"
    headers = {"Origin": "https://shop.example", "X-Widget-Key": widget["widget_key"]}
    noisy = {"visitor_id": "n" * 20, "text": "hi"}
    with from_address(client, fresh_address()):
        codes = [client.post(url, json=noisy, headers=headers).status_code for _ in range(22)]
    assert codes.count(429) >= 2
    with from_address(client, fresh_address()):
        calm = client.post(url, json={"visitor_id": "c" * 20, "text": "hi"}, headers=headers)
    assert calm.status_code == 200


def test_one_address_rotating_visitor_ids_cannot_use_up_the_widget(client, admin_headers):
    tenant = create_tenant(client, admin_headers, rate_limit=1000)
    widget = configure(client, tenant, "web", {}, allowed_origins=["https://shop.example"])
    url = f"/v1/channels/web/{tenant.tenant_id}"
    headers = {"Origin": "https://shop.example", "X-Widget-Key": widget["widget_key"]}
    with from_address(client, fresh_address()):
        codes = [
            client.post(
                url, json={"visitor_id": f"rot{i:017d}", "text": "hi"}, headers=headers
            ).status_code
            for i in range(64)
        ]
    assert codes[0] == 200 and codes[-1] == 429
    with from_address(client, fresh_address()):
        other = client.post(url, json={"visitor_id": "o" * 20, "text": "hi"}, headers=headers)
    assert other.status_code == 200


def test_a_webhook_over_budget_is_acknowledged_and_answered_later(
    client,
    admin_headers,
    provider,  # noqa: F811
):
    tenant = create_tenant(client, admin_headers, rate_limit=1)
    whatsapp_config(client, tenant, provider)
    configure(client, tenant, "twilio", {"account_sid": "AC1", "auth_token": AUTH_TOKEN}, provider)
    first = samples.whatsapp({"id": "wamid.budget1", "type": "text", "text": {"body": "hello"}})
    assert post_meta(client, "whatsapp", tenant, first).json() == {"received": 1, "answered": 1}
    second = samples.whatsapp({"id": "wamid.budget2", "type": "text", "text": {"body": "help"}})
    kept = post_meta(client, "whatsapp", tenant, second)
    assert kept.status_code == 200
    assert kept.json() == {"received": 1, "answered": 0, "deferred": 1}
    # a provider's retry of the kept message is not taken twice
    assert post_meta(client, "whatsapp", tenant, second).json() == {"received": 1, "answered": 0}
    sms_url = f"http://testserver/v1/channels/twilio/{tenant.tenant_id}"
    for sid, text in (("SM0000000000000000000000000000bud1", "hello"),
                      ("SM0000000000000000000000000000bud2", "thanks")):  # fmt: skip
        form = samples.twilio_sms(text, sid=sid)
        sms = client.post(sms_url, data=form, headers=twilio_headers(AUTH_TOKEN, sms_url, form))
        assert sms.status_code == 200 and sms.text.endswith("<Response/>")  # Twilio: never 429
    provider.wait_for(1, "/messages")
    provider.wait_for(1, "/Messages.json")
    sender = client.app.state.platform.sender
    client.portal.call(sender.recover, 0.0)  # still over budget: kept
    assert len(provider.sends("/messages")) == 1
    raised = client.patch(
        f"/v1/tenants/{tenant.tenant_id}",
        json={"rate_limit_per_minute": 600},
        headers=admin_headers,
    )
    assert raised.status_code == 200

    def answered_later():
        client.portal.call(sender.recover, 0.0)  # one round of the recovery loop
        both = (len(provider.sends("/messages")), len(provider.sends("/Messages.json")))
        return both == (2, 2)  # each kept message answered once, in some round

    assert eventually(answered_later, timeout_s=30)
    conversation = client.get(
        "/v1/conversations",
        params={"user_id": f"whatsapp:{samples.WA_USER}"},
        headers=tenant.headers,
    ).json()["conversations"][0]
    messages = client.get(
        f"/v1/conversations/{conversation['conversation_id']}", headers=tenant.headers
    ).json()["messages"]
    assert [m["text"] for m in messages if m["direction"] == "in"] == ["hello", "help"]


# Unauthenticated work


def test_random_api_keys_reach_postgres_at_most_once_per_key(client, tenant):
    with from_address(client, fresh_address()):
        send(client, tenant)  # the tenant's own key, cached
        before = pg_requests(client)
        # keys of tenants that do not exist: answered from Redis
        for _ in range(10):
            bogus = new_api_key(uuid.uuid4())
            response = client.get("/v1/conversations", params={"user_id": "u"},
                                  headers={"Authorization": f"Bearer {bogus}"})  # fmt: skip
            assert response.status_code == 401
        assert pg_requests(client) == before
        # random keys of a real tenant: each looked up once, then the miss is cached
        keys = [new_api_key(tenant.tenant_id) for _ in range(5)]
        for _ in range(3):
            for key in keys:
                response = client.post("/v1/messages", json={"user_id": "u", "text": "x"},
                                       headers={"Authorization": f"Bearer {key}"})  # fmt: skip
                assert response.status_code == 401
        assert pg_requests(client) - before <= len(keys)


def test_failed_authentication_from_one_address_is_throttled(client, tenant):
    bad = {"Authorization": f"Bearer {new_api_key(tenant.tenant_id)}"}
    with from_address(client, fresh_address()):
        assert client.get("/v1/flow", headers=tenant.headers).status_code == 200  # cached
        codes = [client.get("/v1/flow", headers=bad).status_code for _ in range(40)]
        assert codes[0] == 401
        assert codes[-1] == 429
        refused = client.get("/v1/flow", headers=bad)
        assert refused.json()["error"]["code"] == "auth_rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        # a valid, cached key from the same address is still served
        assert client.get("/v1/flow", headers=tenant.headers).status_code == 200
    with from_address(client, fresh_address()):
        assert client.get("/v1/flow", headers=bad).status_code == 401  # others unaffected


def test_an_unknown_tenants_webhook_never_reaches_postgres(client, tenant):
    with from_address(client, fresh_address()):
        send(client, tenant)
        before = pg_requests(client)
        for channel in ("whatsapp", "twilio", "slack", "web"):
            for _ in range(3):
                url = f"/v1/channels/{channel}/{uuid.uuid4()}"
                response = client.post(url, content=b"{}")
                assert response.status_code == 404
                assert response.json()["error"]["code"] == "channel_not_configured"
        assert pg_requests(client) == before


def test_a_tenant_created_after_the_directory_was_filled_is_known(client, admin_headers):
    with from_address(client, fresh_address()):
        client.post(f"/v1/channels/whatsapp/{uuid.uuid4()}", content=b"{}")  # fills it
        fresh = create_tenant(client, admin_headers)
        assert send(client, fresh).status_code == 200


# Remembered choices


def test_remembered_choices_never_bring_back_an_erased_conversation(client, tenant, redis_sync):
    assert client.put("/v1/flow", json=RICH_FLOW, headers=tenant.headers).status_code == 200
    conversation_id = send(client, tenant, "hello").json()["conversation_id"]
    key = TenantKeyspace(tenant.tenant_id).conversation(conversation_id)
    platform = client.app.state.platform
    result = {
        "conversation_id": conversation_id,
        "replies": [{"type": "quick_replies", "payload": samples.REPLIES["quick_replies"]}],
    }
    rendered = [Rendered(["1. Red\n2. Blue"], "quick_replies->text")]
    client.portal.call(_remember_choices, platform, tenant.tenant_id, result, rendered)
    kept = orjson.loads(redis_sync.hget(key, "choices"))
    assert [c["payload"] for c in kept["choices"]] == ["RED", "BLUE"]
    assert 0 < redis_sync.ttl(key) <= platform.store.ttl_seconds
    redis_sync.delete(key)  # what an erasure does to the conversation meanwhile
    client.portal.call(_remember_choices, platform, tenant.tenant_id, result, rendered)
    assert not redis_sync.exists(key)


@pytest.fixture
def redis_sync(client):
    return client.app.state.platform.redis_sync
