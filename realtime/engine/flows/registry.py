"""Published flow versions in PostgreSQL; which version new conversations start on.

Publishing inserts a new version and makes it live; a rollback makes an older version live
again (history is never rewritten). An experiment splits new conversations between
versions by a hash of the user, so a user always lands in the same variant. What the hot
path needs (the live version and the split) is cached in the tenant's Redis hash by the
control plane; documents are cached per (tenant, version) in each process, since a
published version never changes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import orjson

from chatlake.db import AppConnection, AppPool, tenant_transaction
from chatlake.errors import NotFound
from chatlake.tenants import ControlPlane, record_audit
from realtime.engine.flows.engine import validate_flow

CACHED_FLOWS = 256


def choose_version(
    routing: dict[str, Any], tenant_id: str, user_id: str
) -> tuple[int | None, str | None]:
    """The flow version (and variant name) a new conversation of `user_id` starts on."""
    experiment = routing.get("experiment")
    if experiment:
        digest = hashlib.sha256(f"{tenant_id}:{user_id}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") % 100
        for variant in experiment:
            bucket -= variant["weight"]
            if bucket < 0:
                return int(variant["version"]), str(variant["name"])
    version = routing.get("flow_version")
    return (int(version) if version is not None else None), None


async def _make_live(conn: AppConnection, tenant_id: str, version: int) -> None:
    await conn.execute(
        "update tenants set flow_version = %s, updated_at = now() where tenant_id = %s",
        (version, tenant_id),
    )


class FlowRegistry:
    def __init__(self, pool: AppPool, control: ControlPlane) -> None:
        self.pool = pool
        self.control = control
        self._documents: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()

    async def publish(self, tenant_id: str, document: dict[str, Any], actor: str) -> int:
        validate_flow(document)
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute("select coalesce(max(version), 0) + 1 as v from flows")
            row = await cur.fetchone()
            assert row is not None
            version = int(row["v"])
            await conn.execute(
                """insert into flows (tenant_id, version, document, created_by)
                   values (%s, %s, %s, %s)""",
                (tenant_id, version, orjson.dumps(document).decode(), actor),
            )
            await _make_live(conn, tenant_id, version)
            await record_audit(conn, tenant_id, actor, "flow.published", str(version))
        await self.control.refresh_cache(tenant_id)
        return version

    async def live(self, tenant_id: str) -> tuple[int | None, list[dict[str, Any]] | None]:
        tenant = await self.control.get_tenant(tenant_id)
        return tenant.flow_version, tenant.flow_experiment

    async def versions(self, tenant_id: str) -> list[dict[str, Any]]:
        live, _ = await self.live(tenant_id)
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                "select version, created_by, created_at from flows order by version"
            )
            rows = await cur.fetchall()
        return [
            {
                "version": row["version"],
                "live": row["version"] == live,
                "created_by": row["created_by"],
                "created_at": row["created_at"].isoformat(),
            }
            for row in rows
        ]

    async def document(self, tenant_id: str, version: int) -> dict[str, Any]:
        key = (tenant_id, version)
        if key in self._documents:
            self._documents.move_to_end(key)
            return self._documents[key]
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute("select document from flows where version = %s", (version,))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"flow version {version} not found")
        self._documents[key] = row["document"]
        while len(self._documents) > CACHED_FLOWS:
            self._documents.popitem(last=False)
        return dict(row["document"])

    async def rollback(self, tenant_id: str, version: int, actor: str) -> int:
        await self.document(tenant_id, version)  # 404 for a version that does not exist
        async with tenant_transaction(self.pool, tenant_id) as conn:
            await _make_live(conn, tenant_id, version)
            await record_audit(conn, tenant_id, actor, "flow.rolled_back", str(version))
        await self.control.refresh_cache(tenant_id)
        return version

    async def set_experiment(
        self, tenant_id: str, variants: list[dict[str, Any]] | None, actor: str
    ) -> None:
        for variant in variants or []:
            await self.document(tenant_id, int(variant["version"]))
        async with tenant_transaction(self.pool, tenant_id) as conn:
            await conn.execute(
                "update tenants set flow_experiment = %s, updated_at = now() where tenant_id = %s",
                (orjson.dumps(variants).decode() if variants else None, tenant_id),
            )
            await record_audit(
                conn, tenant_id, actor, "flow.experiment", None, {"variants": variants or []}
            )
        await self.control.refresh_cache(tenant_id)
