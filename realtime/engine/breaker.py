"""A circuit breaker per tenant and provider tier, kept in Redis so every replica agrees.

Closed: calls go through; `failures` failures in a row open it. Open: the tier is skipped
(the chain moves on at once) until `cooldown_s` has passed. Then half-open: one call is
let through (the replica that wins a SET NX); its success closes the breaker, its failure
opens it for another cool-down.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from chatlake.keyspace import TenantKeyspace


class CircuitBreaker:
    def __init__(self, redis: Redis, failures: int = 5, cooldown_s: float = 30.0) -> None:
        self.redis = redis
        self.failures = failures
        self.cooldown_s = cooldown_s

    def _key(self, tenant_id: str, tier: str) -> str:
        return TenantKeyspace(tenant_id).breaker(tier)

    async def allow(self, tenant_id: str, tier: str) -> bool:
        key = self._key(tenant_id, tier)
        opened_at = await self.redis.hget(key, "opened_at")
        if opened_at is None:
            return True  # closed
        if time.time() - float(opened_at) < self.cooldown_s:
            return False  # open
        # Half-open: exactly one trial call per cool-down, across replicas.
        trial = await self.redis.set(f"{key}:trial", 1, nx=True, ex=max(1, int(self.cooldown_s)))
        return bool(trial)

    async def state(self, tenant_id: str, tier: str) -> str:
        opened_at = await self.redis.hget(self._key(tenant_id, tier), "opened_at")
        if opened_at is None:
            return "closed"
        return "open" if time.time() - float(opened_at) < self.cooldown_s else "half_open"

    async def succeeded(self, tenant_id: str, tier: str) -> None:
        key = self._key(tenant_id, tier)
        await self.redis.delete(key, f"{key}:trial")

    async def failed(self, tenant_id: str, tier: str) -> None:
        key = self._key(tenant_id, tier)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "failures", 1)
            pipe.hget(key, "opened_at")
            failures, opened_at = await pipe.execute()
        if opened_at is not None or int(failures) >= self.failures:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, "opened_at", time.time())
                pipe.delete(f"{key}:trial")
                pipe.expire(key, 86400)
                await pipe.execute()
