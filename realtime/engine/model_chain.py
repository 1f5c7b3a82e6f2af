"""The tenant's model chain: which LLM providers answer first, second, …, before the
knowledge tier and the rules. Credentials are sealed with the tenant id as context and
never leave this module in the clear except to the provider client that needs them.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatlake.db import AppPool, tenant_transaction
from chatlake.secrets import SecretBox
from chatlake.tenants import record_audit
from realtime.engine.tenant_cache import TenantCache

PROVIDERS = ("openai", "anthropic", "gemini", "azure_openai", "huggingface", "openai_compatible")


def _same_endpoint(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("provider", "model", "base_url"))


CACHE_SECONDS = 5.0  # how long another replica may answer with the previous chain


class ModelChainStore:
    def __init__(self, pool: AppPool, box: SecretBox) -> None:
        self.pool = pool
        self.box = box
        self._cache: TenantCache[list[dict[str, Any]]] = TenantCache(CACHE_SECONDS)

    async def _stored(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self._cache.get(tenant_id, self._load)

    async def _load(self, tenant_id: str) -> list[dict[str, Any]]:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute("select tiers from model_chains")
            row = await cur.fetchone()
        return list(row["tiers"]) if row else []

    async def tiers_with_keys(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tiers with their keys opened, for the provider clients."""
        return [
            {**{k: v for k, v in t.items() if k != "sealed_api_key"},
             "api_key": self.box.open(t["sealed_api_key"], tenant_id)
             if "sealed_api_key" in t else None}
            for t in await self._stored(tenant_id)
        ]  # fmt: skip

    async def get(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tiers as the API shows them: whether a key is set, never the key."""
        return [
            {**{k: v for k, v in tier.items() if k != "sealed_api_key"},
             "has_api_key": "sealed_api_key" in tier}
            for tier in await self._stored(tenant_id)
        ]  # fmt: skip

    async def put(self, tenant_id: str, tiers: list[dict[str, Any]], actor: str) -> None:
        """Replace the chain. A tier sent without `api_key` keeps the key of the tier with
        the same provider, model and base URL, so editing the order needs no secrets."""
        previous = await self._stored(tenant_id)
        stored = []
        for tier in tiers:
            entry = {k: v for k, v in tier.items() if k != "api_key" and v is not None}
            if tier.get("api_key"):
                entry["sealed_api_key"] = self.box.seal(tier["api_key"], tenant_id)
            else:
                kept = next((p for p in previous if _same_endpoint(p, entry)), None)
                if kept and "sealed_api_key" in kept:
                    entry["sealed_api_key"] = kept["sealed_api_key"]
            stored.append(entry)
        async with tenant_transaction(self.pool, tenant_id) as conn:
            await conn.execute(
                """insert into model_chains (tenant_id, tiers) values (%s, %s)
                   on conflict (tenant_id)
                   do update set tiers = excluded.tiers, updated_at = now()""",
                (tenant_id, orjson.dumps(stored).decode()),
            )
            self._cache.drop(tenant_id)
            await record_audit(
                conn, tenant_id, actor, "model_chain.saved", None,
                {"tiers": [f"{t['provider']}:{t['model']}" for t in stored]},
            )  # fmt: skip

    async def api_key(self, tenant_id: str, index: int) -> str | None:
        """The clear key of tier `index`, for the provider client only."""
        tiers = await self._stored(tenant_id)
        sealed = tiers[index].get("sealed_api_key") if index < len(tiers) else None
        return self.box.open(sealed, tenant_id) if sealed else None
