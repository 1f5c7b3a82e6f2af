"""A per-process cache of one value per tenant, for a few seconds.

For settings the reply chain reads on every message it handles (does the tenant have
documents, which model tiers) and that change rarely: a PostgreSQL round trip at most every
`ttl_s` per tenant and process; the writer drops its own entry at once, other replicas see
the change within `ttl_s`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TenantCache(Generic[T]):
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[T, float]] = {}

    async def get(self, tenant_id: str, load: Callable[[str], Awaitable[T]]) -> T:
        entry = self._entries.get(tenant_id)
        if entry is not None and time.monotonic() - entry[1] < self.ttl_s:
            return entry[0]
        value = await load(tenant_id)
        self._entries[tenant_id] = (value, time.monotonic())
        return value

    def drop(self, tenant_id: str) -> None:
        self._entries.pop(tenant_id, None)
