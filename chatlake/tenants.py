"""Tenants, their API keys and the audit log: the control plane.

PostgreSQL is the source of truth (row-level security on every table); Redis keeps a cache
of what the hot path needs to authenticate and rate-limit without touching PostgreSQL:
the tenant's status and rate limit, and one entry per live API key. Every change here
writes PostgreSQL first, then the cache, and leaves an audit entry in the same transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import orjson
from redis.asyncio import Redis

from chatlake.apikeys import ParsedKey, display_prefix, key_digest, new_api_key
from chatlake.db import AppConnection, AppPool, open_app_pool, tenant_transaction
from chatlake.embedded import Services
from chatlake.errors import NotFound
from chatlake.keyspace import EVENT_STREAMS, KNOWN_TENANTS, TenantKeyspace, redis_client
from chatlake.settings import Settings

# Cached auth decisions expire so that a cache written just before a revocation cannot
# outlive it by more than this.
POSITIVE_CACHE_SECONDS = 300
NEGATIVE_CACHE_SECONDS = 60
TENANT_CACHE_SECONDS = 86400


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str
    plan: str
    rate_limit_per_minute: int
    status: str
    created_at: datetime
    retention_days: int = 90
    flow_version: int | None = None
    flow_experiment: list[dict[str, Any]] | None = None

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data

    @property
    def routing(self) -> str:
        """Which flow version new conversations start on (JSON, cached for the hot path)."""
        return orjson.dumps(
            {"flow_version": self.flow_version, "experiment": self.flow_experiment}
        ).decode()


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    name: str
    api_key: str
    display_prefix: str


def _tenant(row: dict[str, Any]) -> Tenant:
    return Tenant(
        tenant_id=str(row["tenant_id"]),
        name=row["name"],
        plan=row["plan"],
        rate_limit_per_minute=row["rate_limit_per_minute"],
        status=row["status"],
        created_at=row["created_at"],
        retention_days=row.get("retention_days", 90),
        flow_version=row.get("flow_version"),
        flow_experiment=row.get("flow_experiment"),
    )


async def record_audit(
    conn: AppConnection,
    tenant_id: str,
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        """insert into audit_log (tenant_id, actor, action, target, detail)
           values (%s, %s, %s, %s, %s)""",
        (tenant_id, actor, action, target, orjson.dumps(detail or {}).decode()),
    )


class ControlPlane:
    def __init__(
        self, pool: AppPool, redis: Redis, initial_flow: dict[str, Any] | None = None
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.initial_flow = initial_flow  # published as version 1 of every new tenant

    async def create_tenant(
        self,
        name: str,
        rate_limit_per_minute: int,
        plan: str = "free",
        actor: str = "platform-admin",
        retention_days: int = 90,
    ) -> tuple[Tenant, IssuedKey]:
        tenant_id = str(uuid4())
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """insert into tenants (tenant_id, name, plan, rate_limit_per_minute,
                                      retention_days)
                   values (%s, %s, %s, %s, %s) returning *""",
                (tenant_id, name, plan, rate_limit_per_minute, retention_days),
            )
            row = await cur.fetchone()
            assert row is not None
            if self.initial_flow is not None:
                await conn.execute(
                    """insert into flows (tenant_id, version, document, created_by)
                       values (%s, 1, %s, %s)""",
                    (tenant_id, orjson.dumps(self.initial_flow).decode(), actor),
                )
                cur = await conn.execute(
                    "update tenants set flow_version = 1 where tenant_id = %s returning *",
                    (tenant_id,),
                )
                row = await cur.fetchone()
                assert row is not None
            tenant = _tenant(row)
            issued = await self._insert_key(conn, tenant_id, "default")
            await record_audit(
                conn,
                tenant_id,
                actor,
                "tenant.created",
                tenant_id,
                {
                    "name": name,
                    "plan": plan,
                    "rate_limit_per_minute": rate_limit_per_minute,
                    "retention_days": retention_days,
                },
            )
        await self._cache_tenant(tenant)
        await self.redis.sadd(EVENT_STREAMS, TenantKeyspace(tenant_id).events)
        await self.redis.sadd(KNOWN_TENANTS, tenant_id)  # realtime/gate.py: it exists now
        return tenant, issued

    async def get_tenant(self, tenant_id: str) -> Tenant:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute("select * from tenants where tenant_id = %s", (tenant_id,))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no tenant {tenant_id}")
        return _tenant(row)

    async def update_tenant(
        self,
        tenant_id: str,
        *,
        rate_limit_per_minute: int | None = None,
        status: str | None = None,
        retention_days: int | None = None,
        plan: str | None = None,
        actor: str = "platform-admin",
    ) -> Tenant:
        asked = {"rate_limit_per_minute": rate_limit_per_minute, "status": status,
                 "retention_days": retention_days, "plan": plan}  # fmt: skip
        changes = {key: value for key, value in asked.items() if value is not None}
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """update tenants set
                     rate_limit_per_minute = coalesce(%s, rate_limit_per_minute),
                     status = coalesce(%s, status),
                     retention_days = coalesce(%s, retention_days),
                     plan = coalesce(%s, plan),
                     updated_at = now()
                   where tenant_id = %s returning *""",
                (rate_limit_per_minute, status, retention_days, plan, tenant_id),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no tenant {tenant_id}")
            await record_audit(conn, tenant_id, actor, "tenant.updated", tenant_id, changes)
        tenant = _tenant(row)
        await self._cache_tenant(tenant)
        return tenant

    async def _insert_key(self, conn: AppConnection, tenant_id: str, name: str) -> IssuedKey:
        api_key = new_api_key(tenant_id)
        prefix = display_prefix(api_key)
        cur = await conn.execute(
            """insert into api_keys (tenant_id, name, display_prefix, key_hash)
               values (%s, %s, %s, %s) returning key_id""",
            (tenant_id, name, prefix, key_digest(api_key)),
        )
        row = await cur.fetchone()
        assert row is not None
        return IssuedKey(
            key_id=str(row["key_id"]), name=name, api_key=api_key, display_prefix=prefix
        )

    async def create_api_key(self, tenant_id: str, name: str, actor: str) -> IssuedKey:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute("select 1 from tenants where tenant_id = %s", (tenant_id,))
            if await cur.fetchone() is None:
                raise NotFound(f"no tenant {tenant_id}")
            issued = await self._insert_key(conn, tenant_id, name)
            await record_audit(
                conn, tenant_id, actor, "api_key.created", issued.key_id, {"name": name}
            )
        return issued

    async def list_api_keys(self, tenant_id: str) -> list[dict[str, Any]]:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """select key_id, name, display_prefix, created_at, revoked_at
                   from api_keys order by created_at"""
            )
            rows = await cur.fetchall()
        return [
            {
                "key_id": str(row["key_id"]),
                "name": row["name"],
                "display_prefix": row["display_prefix"],
                "created_at": row["created_at"].isoformat(),
                "revoked_at": row["revoked_at"].isoformat() if row["revoked_at"] else None,
            }
            for row in rows
        ]

    async def revoke_api_key(self, tenant_id: str, key_id: str, actor: str) -> None:
        try:
            UUID(key_id)
        except ValueError:
            raise NotFound(f"no API key {key_id}") from None
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """update api_keys set revoked_at = coalesce(revoked_at, now())
                   where key_id = %s returning key_hash""",
                (key_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no API key {key_id}")
            await record_audit(conn, tenant_id, actor, "api_key.revoked", key_id)
        await self.redis.delete(TenantKeyspace(tenant_id).api_key(bytes(row["key_hash"]).hex()))

    async def authenticate_from_store(self, key: ParsedKey) -> bool:
        """The cache missed: decide from PostgreSQL and refill the cache either way."""
        keys = TenantKeyspace(key.tenant_id)
        async with tenant_transaction(self.pool, key.tenant_id) as conn:
            cur = await conn.execute(
                """select k.key_id, t.* from api_keys k join tenants t using (tenant_id)
                   where k.key_hash = %s and k.revoked_at is null""",
                (key.digest,),
            )
            row = await cur.fetchone()
        if row is None:
            await self.redis.set(keys.api_key(key.digest_hex), "", ex=NEGATIVE_CACHE_SECONDS)
            return False
        await self._cache_tenant(_tenant(row))
        await self.redis.set(
            keys.api_key(key.digest_hex), str(row["key_id"]), ex=POSITIVE_CACHE_SECONDS
        )
        return True

    async def refresh_cache(self, tenant_id: str) -> Tenant:
        """Re-read the tenant and rewrite what the hot path caches of it."""
        tenant = await self.get_tenant(tenant_id)
        await self._cache_tenant(tenant)
        return tenant

    async def _cache_tenant(self, tenant: Tenant) -> None:
        keys = TenantKeyspace(tenant.tenant_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.tenant,
                mapping={
                    "status": tenant.status,
                    "rate_limit": tenant.rate_limit_per_minute,
                    "routing": tenant.routing,
                },
            )
            pipe.expire(keys.tenant, TENANT_CACHE_SECONDS)
            await pipe.execute()

    async def audit_entries(self, tenant_id: str, limit: int = 100) -> list[dict[str, Any]]:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """select audit_id, actor, action, target, detail, created_at
                   from audit_log order by audit_id desc limit %s""",
                (limit,),
            )
            rows = await cur.fetchall()
        return [{**row, "created_at": row["created_at"].isoformat()} for row in rows]


@asynccontextmanager
async def control_plane(
    settings: Settings, initial_flow: dict[str, Any] | None = None
) -> AsyncIterator[ControlPlane]:
    """A control plane on its own short-lived connections (for the CLI and `up`)."""
    endpoints = Services(settings).endpoints()
    pool = open_app_pool(endpoints.app_database_url, max_size=2)
    await pool.open(wait=True, timeout=30)
    redis = redis_client(endpoints.redis_url, max_connections=4)
    try:
        yield ControlPlane(pool, redis, initial_flow)
    finally:
        await pool.close()
        await redis.aclose()
