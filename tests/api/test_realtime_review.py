"""Second look at issue 17's realtime half: a known tenant's webhooks cost neither a
PostgreSQL transaction for a channel it has not configured (its id is public: the widget
shows it) nor a Redis round trip to the tenant directory per message; a malformed URL in
a configuration is a 422, not a 500; a kept (deferred) channel message that cannot be
answered stops neither the other tenants' nor the outbox's recovery, and an erased
subject's kept message goes with the subject; an IPv6 host cannot dodge the per-address
limits by rotating through its /64. Against the real stores."""

from __future__ import annotations

import secrets

import orjson
import pytest

from chatlake.apikeys import new_api_key
from chatlake.keyspace import TenantKeyspace
from pipelines.compliance.erasure import erase_redis
from tests.api.test_channels import post_meta, provider, whatsapp_config  # noqa: F401
from tests.api.test_noisy_neighbours import fresh_address, from_address, pg_requests
from tests.utils import channel_samples as samples
from tests.utils.factories import create_tenant


def directory_lookups(redis_sync) -> int:
    """SISMEMBER calls Redis has answered so far (the tenant directory's lookup)."""
    return int(redis_sync.info("commandstats").get("cmdstat_sismember", {}).get("calls", 0))


def test_a_known_tenants_unconfigured_channel_reaches_postgres_once(client, tenant):
    url = f"/v1/channels/slack/{tenant.tenant_id}"
    with from_address(client, fresh_address()):
        before = pg_requests(client)
        for _ in range(10):
            response = client.post(url, content=b"{}")
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "channel_not_configured"
        assert pg_requests(client) - before <= 1


def test_configuring_a_channel_ends_its_remembered_absence(client, tenant):
    url = f"/v1/channels/web/{tenant.tenant_id}"
    assert client.options(url).status_code == 404  # not configured: remembered briefly
    put = client.put("/v1/channels/web", json={"allowed_origins": ["https://shop.example"]},
                     headers=tenant.headers)  # fmt: skip
    assert put.status_code == 200, put.text
    preflight = client.options(url, headers={"Origin": "https://shop.example"})
    assert preflight.status_code == 204


def test_a_known_tenants_webhooks_ask_the_directory_once(client, tenant):
    redis_sync = client.app.state.platform.redis_sync
    url = f"/v1/channels/whatsapp/{tenant.tenant_id}"
    with from_address(client, fresh_address()):
        client.post(url, content=b"{}")  # the first may ask Redis
        before = directory_lookups(redis_sync)
        for _ in range(10):
            assert client.post(url, content=b"{}").status_code == 404
        assert directory_lookups(redis_sync) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/channels/slack", {"api_base_url": "http://[::1"}),
        ("/v1/channels/teams", {"secrets": {"openid_metadata_url": "https://[::1/openid"}}),
        (
            "/v1/model-chain",
            {"tiers": [{"provider": "openai", "model": "m", "base_url": "http://[::1"}]},
        ),
    ],
)
def test_a_malformed_configured_url_is_a_422(client, tenant, path, body):
    response = client.put(path, json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


def test_an_unreadable_kept_message_stops_neither_the_outbox_nor_other_tenants(
    client,
    admin_headers,
    provider,  # noqa: F811
):
    redis_sync = client.app.state.platform.redis_sync
    poisoned = create_tenant(client, admin_headers)
    inbox = TenantKeyspace(poisoned.tenant_id).channel_inbox
    # a kept message this release cannot read (left by an older one, or damaged)
    unreadable = {"channel": "whatsapp", "inbound": {"from_an_older_release": True}}
    redis_sync.xadd(inbox, {"event": orjson.dumps(unreadable)})
    other = create_tenant(client, admin_headers)
    whatsapp_config(client, other, provider)
    # what a process that died mid-send left in the other tenant's outbox
    record = {"channel": "whatsapp", "config_channel": "whatsapp", "user_id": "whatsapp:1556",
              "conversation_id": "c1", "address": {"to": "1556", "phone_number_id": "1"},
              "bodies": [{"type": "text", "text": {"body": "still sent"}}]}  # fmt: skip
    redis_sync.xadd(TenantKeyspace(other.tenant_id).channel_outbox,
                    {"event": orjson.dumps(record)})  # fmt: skip
    sender = client.app.state.platform.sender
    assert client.portal.call(sender.recover, 0.0) >= 1  # one round of the recovery loop
    [sent] = provider.wait_for(1, "/messages")
    assert sent["json"]["text"]["body"] == "still sent"
    assert redis_sync.xlen(inbox) == 0  # dropped (and logged): it could never be answered


def test_an_erased_subjects_kept_message_is_erased_not_answered_later(
    client,
    admin_headers,
    provider,  # noqa: F811
):
    redis_sync = client.app.state.platform.redis_sync
    tenant = create_tenant(client, admin_headers, rate_limit=1)
    whatsapp_config(client, tenant, provider)
    first = samples.whatsapp({"id": "wamid.erased1", "type": "text", "text": {"body": "hello"}})
    assert post_meta(client, "whatsapp", tenant, first).json()["answered"] == 1
    second = samples.whatsapp({"id": "wamid.erased2", "type": "text", "text": {"body": "help"}})
    assert post_meta(client, "whatsapp", tenant, second).json()["deferred"] == 1
    inbox = TenantKeyspace(tenant.tenant_id).channel_inbox
    assert redis_sync.xlen(inbox) == 1
    user_id = f"whatsapp:{samples.WA_USER}"
    # the Redis step of the subject's erasure (pipelines/compliance/erasure.py), as the job runs it
    report = erase_redis(redis_sync, tenant.tenant_id, user_id, "no-subject-key")
    assert report["channel_inbox_entries_deleted"] == 1
    assert redis_sync.xlen(inbox) == 0
    raised = client.patch(f"/v1/tenants/{tenant.tenant_id}",
                          json={"rate_limit_per_minute": 600}, headers=admin_headers)  # fmt: skip
    assert raised.status_code == 200
    client.portal.call(client.app.state.platform.sender.recover, 0.0)
    conversations = client.get(
        "/v1/conversations", params={"user_id": user_id}, headers=tenant.headers
    ).json()["conversations"]
    assert conversations == []  # nothing of the erased subject came back


def test_an_ipv6_host_rotating_through_its_64_counts_as_one_address(client, tenant):
    bad = {"Authorization": f"Bearer {new_api_key(tenant.tenant_id)}"}
    prefix = f"2001:db8:{secrets.randbelow(0xFFFF):x}:{secrets.randbelow(0xFFFF):x}"
    codes = []
    for i in range(40):  # a new address of the same /64 for every try
        with from_address(client, f"{prefix}::{i + 1:x}"):
            codes.append(client.get("/v1/flow", headers=bad).status_code)
    assert codes[0] == 401 and codes[-1] == 429
    with from_address(client, f"2001:db8:ffff:{secrets.randbelow(0xFFFF):x}::1"):
        assert client.get("/v1/flow", headers=bad).status_code == 401  # another network
