"""The gate in front of PostgreSQL: work an unauthenticated caller can cause is answered
from Redis.

* `TenantDirectory`: which tenant ids exist. Tenants are added to a Redis set when they
  are created; once the set has been filled from PostgreSQL (`KNOWN_TENANTS_COMPLETE`), a
  tenant id not in it — a random key's, a webhook URL's — is refused without a query.
  Until then (a Redis that lost its data, an owner connection this process cannot open)
  the caller falls back to PostgreSQL, as before.
* `FailedAuth`: failed authentications per client address in a fixed window; past the
  limit the address gets 429 + Retry-After before anything else is looked up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from redis.asyncio import Redis

from chatlake.db import owner_connection
from chatlake.keyspace import KNOWN_TENANTS, KNOWN_TENANTS_COMPLETE, auth_failures

log = logging.getLogger(__name__)

FAILURES_PER_WINDOW = 30  # a client that mistypes a key a few times is never caught
FAILURE_WINDOW_S = 60
REBUILD_LOCK_S = 60
REBUILD_TIMEOUT_S = 20.0
REBUILD_RETRY_S = 60.0  # after a failed fill (PostgreSQL away), PostgreSQL answers meanwhile
# The directory is filled again this often: a tenant whose creation could not reach Redis
# (PostgreSQL committed, the SADD failed) is known again within the hour.
DIRECTORY_REFRESH_S = 3600


class TenantDirectory:
    def __init__(self, redis: Redis, owner_url: str | None) -> None:
        self.redis = redis
        self.owner_url = owner_url
        self._rebuilding = asyncio.Lock()
        self._retry_at = 0.0  # a failed fill is not tried again on every request
        # Tenants are never deleted, so one found is remembered for the process's life:
        # a known tenant's webhooks ask Redis nothing (at most one entry per tenant).
        self._known: set[str] = set()

    async def exists(self, tenant_id: str) -> bool | None:
        """Whether the tenant exists, from this process's memory or Redis alone; None when
        the directory is not known to be complete (ask PostgreSQL)."""
        if tenant_id in self._known:
            return True
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(KNOWN_TENANTS_COMPLETE)
            pipe.sismember(KNOWN_TENANTS, tenant_id)
            complete, member = await pipe.execute()
        if not member and complete:
            return False
        if not member:
            if not await self._rebuild():
                return None
            member = await self.redis.sismember(KNOWN_TENANTS, tenant_id)
        if member:
            self._known.add(tenant_id)
        return bool(member)

    async def _rebuild(self) -> bool:
        """Fill the directory from PostgreSQL (once, whichever process gets there first)."""
        # never queue requests behind a fill: they ask PostgreSQL meanwhile
        if self.owner_url is None or self._rebuilding.locked():
            return False
        if time.monotonic() < self._retry_at:
            return False
        async with self._rebuilding:
            if await self.redis.exists(KNOWN_TENANTS_COMPLETE):
                return True
            if not await self.redis.set(
                f"{KNOWN_TENANTS_COMPLETE}:lock", "1", nx=True, ex=REBUILD_LOCK_S
            ):
                return False  # another process is at it: PostgreSQL answers meanwhile
            try:
                ids = await asyncio.wait_for(
                    asyncio.to_thread(_all_tenant_ids, self.owner_url), REBUILD_TIMEOUT_S
                )
            except Exception:
                log.warning("the tenant directory cannot be filled", exc_info=True)
                self._retry_at = time.monotonic() + REBUILD_RETRY_S
                await self.redis.delete(f"{KNOWN_TENANTS_COMPLETE}:lock")
                return False
            # Tenants created meanwhile were added by create_tenant itself: the set is
            # complete once these are in too.
            async with self.redis.pipeline(transaction=True) as pipe:
                for start in range(0, len(ids), 1000):
                    pipe.sadd(KNOWN_TENANTS, *ids[start : start + 1000])
                pipe.set(KNOWN_TENANTS_COMPLETE, "1", ex=DIRECTORY_REFRESH_S)
                pipe.delete(f"{KNOWN_TENANTS_COMPLETE}:lock")
                await pipe.execute()
            return True


def _all_tenant_ids(owner_url: str) -> list[str]:
    with owner_connection(owner_url) as conn:
        conn.execute("set statement_timeout = '15s'")
        rows = conn.execute("select tenant_id::text as t from tenants").fetchall()
    return [row["t"] for row in rows]


class FailedAuth:
    """Failed authentications per client address (by digest: no address is stored)."""

    def __init__(self, redis: Redis, limit: int = FAILURES_PER_WINDOW) -> None:
        self.redis = redis
        self.limit = limit

    @staticmethod
    def _key(address: str) -> str:
        return auth_failures(hashlib.sha256(address.encode()).hexdigest()[:32])

    async def blocked(self, address: str | None) -> int:
        """Seconds the address must wait before trying again (0: it may try)."""
        if not address:
            return 0
        key = self._key(address)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.ttl(key)
            count, ttl = await pipe.execute()
        if count is None or int(count) < self.limit:
            return 0
        return max(1, int(ttl))

    async def failed(self, address: str | None) -> None:
        if not address:
            return
        key = self._key(address)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=FAILURE_WINDOW_S, nx=True)  # the window opens
            pipe.incr(key)
            await pipe.execute()
