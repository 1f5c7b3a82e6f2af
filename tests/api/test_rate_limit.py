"""The per-tenant rate limit (GCRA in one Lua script): over the limit is 429 + Retry-After."""

from __future__ import annotations

import time

from tests.utils.factories import create_tenant, send


def test_over_the_limit_is_429_with_retry_after(client, admin_headers):
    tenant = create_tenant(client, admin_headers, rate_limit=3)
    statuses = [send(client, tenant, f"m{i}").status_code for i in range(3)]
    assert statuses == [200, 200, 200]
    limited = send(client, tenant, "one too many")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= 20  # one message per 20 s at 3/min


def test_one_tenant_hitting_its_limit_leaves_others_alone(client, admin_headers, tenant):
    noisy = create_tenant(client, admin_headers, rate_limit=1)
    assert send(client, noisy).status_code == 200
    assert send(client, noisy).status_code == 429
    assert send(client, tenant).status_code == 200


def test_raising_the_limit_takes_effect_at_once(client, admin_headers):
    tenant = create_tenant(client, admin_headers, rate_limit=1)
    assert send(client, tenant).status_code == 200
    assert send(client, tenant).status_code == 429
    patched = client.patch(
        f"/v1/tenants/{tenant.tenant_id}",
        json={"rate_limit_per_minute": 600},
        headers=admin_headers,
    )
    assert patched.status_code == 200
    assert patched.json()["rate_limit_per_minute"] == 600
    # The bucket drains at the new rate: 60/600 = 0.1 s per message.
    time.sleep(0.25)
    assert send(client, tenant).status_code == 200


def test_refused_messages_are_not_recorded(client, admin_headers):
    tenant = create_tenant(client, admin_headers, rate_limit=1)
    conversation_id = send(client, tenant).json()["conversation_id"]
    assert send(client, tenant, "x", conversation_id=conversation_id).status_code == 429
    # Reading is not rate-limited; the refused message left no trace.
    body = client.get(f"/v1/conversations/{conversation_id}", headers=tenant.headers).json()
    assert body["message_count"] == 2
