"""The model chain's configuration: keys go in sealed and never come out."""

from __future__ import annotations

import psycopg

CHAIN = {
    "tiers": [
        {"provider": "openai", "model": "gpt-4o-mini", "api_key": "sk-test-SECRET-1"},
        {
            "provider": "openai_compatible", "model": "llama3", "timeout_s": 5,
            "base_url": "http://127.0.0.1:11434/v1",
        },
    ]
}  # fmt: skip


def test_keys_are_stored_sealed_and_never_returned(client, tenant, endpoints):
    response = client.put("/v1/model-chain", json=CHAIN, headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "SECRET" not in response.text
    assert [t["has_api_key"] for t in body["tiers"]] == [True, False]
    assert body["then"] == ["knowledge", "rules"]
    with psycopg.connect(endpoints.database_url) as owner:
        stored = owner.execute(
            "select tiers::text from model_chains where tenant_id = %s", (tenant.tenant_id,)
        ).fetchone()[0]
    assert "SECRET" not in stored
    log = client.get("/v1/audit-log", headers=tenant.headers).text
    assert "SECRET" not in log


def test_reordering_without_keys_keeps_them(client, tenant):
    client.put("/v1/model-chain", json=CHAIN, headers=tenant.headers)
    reordered = {"tiers": [CHAIN["tiers"][1], {"provider": "openai", "model": "gpt-4o-mini"}]}
    body = client.put("/v1/model-chain", json=reordered, headers=tenant.headers).json()
    assert [t["has_api_key"] for t in body["tiers"]] == [False, True]


def test_the_chain_is_validated_and_private(client, tenant, other_tenant):
    bad = {"tiers": [{"provider": "skynet", "model": "x"}]}
    assert client.put("/v1/model-chain", json=bad, headers=tenant.headers).status_code == 422
    url = {"tiers": [{"provider": "openai", "model": "x", "base_url": "ftp://nope"}]}
    assert client.put("/v1/model-chain", json=url, headers=tenant.headers).status_code == 422
    client.put("/v1/model-chain", json=CHAIN, headers=tenant.headers)
    assert client.get("/v1/model-chain", headers=other_tenant.headers).json()["tiers"] == []


def test_the_sealed_key_opens_for_the_provider_client_only(client, tenant):
    client.put("/v1/model-chain", json=CHAIN, headers=tenant.headers)
    store = client.app.state.platform.model_chain
    key = client.portal.call(store.api_key, tenant.tenant_id, 0)
    assert key == "sk-test-SECRET-1"
    assert client.portal.call(store.api_key, tenant.tenant_id, 1) is None


def test_model_names_and_strings_that_no_url_or_store_can_carry_are_422(client, tenant):
    control = {"tiers": [{"provider": "gemini", "model": "gemini\tpro"}]}
    assert client.put("/v1/model-chain", json=control, headers=tenant.headers).status_code == 422
    surrogate = b'{"tiers": [{"provider": "gemini", "model": "g\\ud83d"}]}'
    response = client.put(
        "/v1/model-chain", content=surrogate,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 422, response.text


def test_endpoints_must_be_public_outside_development(client, tenant):
    settings = client.app.state.platform.settings
    settings.private_urls = False  # as in production
    try:
        for url in ("http://127.0.0.1:11434/v1", "https://10.0.0.8/v1", "https://localhost/v1"):
            tier = {"provider": "openai_compatible", "model": "llama3", "base_url": url}
            refused = client.put("/v1/model-chain", json={"tiers": [tier]}, headers=tenant.headers)
            assert refused.status_code == 422, url
            assert refused.json()["error"]["message"].startswith("tiers[0].base_url")
        default = {"tiers": [{"provider": "openai", "model": "gpt-4o-mini"}]}  # the provider's own
        assert (
            client.put("/v1/model-chain", json=default, headers=tenant.headers).status_code == 200
        )
    finally:
        settings.private_urls = None
