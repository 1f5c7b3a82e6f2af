"""Factories for tests: tenants created through the public API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from fastapi.testclient import TestClient


@dataclass
class TenantHandle:
    tenant_id: str
    api_key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def create_tenant(
    client: TestClient,
    admin_headers: dict[str, str],
    name: str | None = None,
    rate_limit: int = 100_000,
) -> TenantHandle:
    response = client.post(
        "/v1/tenants",
        json={"name": name or f"tenant-{uuid4().hex[:8]}", "rate_limit_per_minute": rate_limit},
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return TenantHandle(body["tenant_id"], body["api_key"], body["key_id"])


def send(client: TestClient, tenant: TenantHandle, text: str = "hello", **fields: Any) -> Any:
    return client.post(
        "/v1/messages", json={"user_id": "alice", "text": text, **fields}, headers=tenant.headers
    )
