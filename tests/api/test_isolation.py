"""Tenant isolation seen from outside: another tenant's data is simply not there."""

from __future__ import annotations

import redis

from chatlake.keyspace import TenantKeyspace
from tests.utils.factories import send


def test_another_tenants_conversation_is_a_404(client, tenant, other_tenant):
    conversation_id = send(client, tenant).json()["conversation_id"]
    read = client.get(f"/v1/conversations/{conversation_id}", headers=other_tenant.headers)
    assert read.status_code == 404
    assert read.json()["error"]["code"] == "not_found"
    write = send(client, other_tenant, "hi", conversation_id=conversation_id)
    assert write.status_code == 404
    listed = client.get(
        "/v1/conversations", params={"user_id": "alice"}, headers=other_tenant.headers
    )
    assert conversation_id not in {c["conversation_id"] for c in listed.json()["conversations"]}


def test_a_conversation_that_never_existed_is_the_same_404(client, tenant):
    response = client.get("/v1/conversations/doesnotexist", headers=tenant.headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_every_redis_key_of_a_tenant_carries_its_hash_tag(client, tenant, endpoints):
    send(client, tenant)
    store = redis.Redis.from_url(endpoints.redis_url)
    keys = [k.decode() for k in store.scan_iter(match=f"*{tenant.tenant_id}*")]
    assert keys
    prefix = TenantKeyspace(tenant.tenant_id).prefix
    assert all(k.startswith(prefix + ":") for k in keys), keys


def test_a_key_of_one_tenant_with_another_tenants_id_is_refused(client, tenant, other_tenant):
    secret = tenant.api_key.split("_", 2)[2]
    forged = f"clk_{other_tenant.tenant_id.replace('-', '')}_{secret}"
    response = client.get(
        "/v1/conversations", params={"user_id": "a"}, headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401
