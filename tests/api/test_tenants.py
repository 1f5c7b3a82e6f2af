"""Tenants, API keys and health endpoints."""

from __future__ import annotations

from tests.utils.factories import send


def test_creating_a_tenant_needs_the_admin_token(client, tenant):
    assert client.post("/v1/tenants", json={"name": "x"}).status_code == 401
    forged = {"Authorization": "Bearer not-the-token"}
    assert client.post("/v1/tenants", json={"name": "x"}, headers=forged).status_code == 401
    # A tenant's own key is not the admin token either.
    assert client.post("/v1/tenants", json={"name": "x"}, headers=tenant.headers).status_code == 401


def test_a_created_tenant_works_with_its_key(client, admin_headers):
    response = client.post(
        "/v1/tenants", json={"name": "acme", "rate_limit_per_minute": 120}, headers=admin_headers
    )
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "acme"
    assert body["api_key"].startswith("clk_")
    headers = {"Authorization": f"Bearer {body['api_key']}"}
    me = client.get("/v1/tenant", headers=headers).json()
    assert me["tenant_id"] == body["tenant_id"]
    assert me["rate_limit_per_minute"] == 120
    assert me["status"] == "active"


def test_keys_are_listed_without_secrets(client, tenant):
    client.post("/v1/api-keys", json={"name": "second"}, headers=tenant.headers)
    listed = client.get("/v1/api-keys", headers=tenant.headers).json()["api_keys"]
    assert [k["name"] for k in listed] == ["default", "second"]
    assert all(tenant.api_key not in str(k) for k in listed)


def test_revoking_another_tenants_key_is_a_404(client, tenant, other_tenant):
    response = client.delete(f"/v1/api-keys/{other_tenant.key_id}", headers=tenant.headers)
    assert response.status_code == 404
    assert client.get("/v1/tenant", headers=other_tenant.headers).status_code == 200


def test_a_suspended_tenant_is_refused(client, admin_headers, tenant):
    patched = client.patch(
        f"/v1/tenants/{tenant.tenant_id}", json={"status": "suspended"}, headers=admin_headers
    )
    assert patched.status_code == 200
    response = send(client, tenant)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_suspended"


def test_patching_an_unknown_tenant_is_a_404(client, admin_headers):
    assert (
        client.patch(
            "/v1/tenants/nope", json={"status": "active"}, headers=admin_headers
        ).status_code
        == 404
    )
    missing = "00000000-0000-0000-0000-000000000000"
    assert (
        client.patch(
            f"/v1/tenants/{missing}", json={"status": "active"}, headers=admin_headers
        ).status_code
        == 404
    )


def test_health_readiness_and_metrics(client, tenant):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert {"postgres", "redis"} <= set(ready["components"])
    send(client, tenant)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert (
        'chatlake_http_requests_total{method="POST",route="/v1/messages",status="200"}'
        in metrics.text
    )
    assert "chatlake_events_appended_total" in metrics.text


def test_the_openapi_document_names_the_contract(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/tenants",
        "/v1/messages",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations",
    ):
        assert path in paths
    schema = spec["components"]["schemas"]["MessageOut"]
    assert set(schema["properties"]) >= {
        "conversation_id",
        "message_id",
        "replies",
        "intent",
        "handoff",
        "answered_by",
    }


def test_the_admin_token_is_checked_before_the_body(client):
    assert client.post("/v1/tenants", json={"name": "   "}).status_code == 401
    assert client.patch("/v1/tenants/x", json={"status": "gone"}).status_code == 401


def test_a_blank_tenant_name_is_422(client, admin_headers):
    response = client.post("/v1/tenants", json={"name": "   "}, headers=admin_headers)
    assert response.status_code == 422
    assert "name: Value error, must not be blank" in response.json()["error"]["message"]


def test_open_signup_creates_tenants_without_the_token(client, settings, monkeypatch):
    monkeypatch.setattr(settings, "open_signup", True)
    response = client.post("/v1/tenants", json={"name": "self-serve"})
    assert response.status_code == 201
    tenant_id = response.json()["tenant_id"]
    headers = {"Authorization": f"Bearer {response.json()['api_key']}"}
    assert client.get("/v1/tenant", headers=headers).json()["tenant_id"] == tenant_id
    # A wrong token is still refused, sign-up or not.
    forged = {"Authorization": "Bearer wrong"}
    assert client.post("/v1/tenants", json={"name": "x"}, headers=forged).status_code == 401


def test_the_audit_log_lists_changes_newest_first(client, tenant, other_tenant):
    created = client.post("/v1/api-keys", json={"name": "ops"}, headers=tenant.headers).json()
    client.delete(f"/v1/api-keys/{created['key_id']}", headers=tenant.headers)
    entries = client.get("/v1/audit-log", headers=tenant.headers).json()["entries"]
    actions = [e["action"] for e in entries]
    assert actions[:3] == ["api_key.revoked", "api_key.created", "tenant.created"]
    assert entries[0]["actor"] == f"api_key:{tenant.key_id}"
    theirs = client.get("/v1/audit-log", headers=other_tenant.headers).json()["entries"]
    assert {e["target"] for e in theirs}.isdisjoint({created["key_id"]})
