"""Identity links: one end user (`user_id`, the data subject) on several channels, so one
conversation context follows them wherever they write from.

An unlinked sender is `<channel>:<id on the channel>` (a phone number, a PSID, a Slack user
id); a link maps a channel's sender to the tenant's own `user_id`. Links are keyed by the
subject's pseudonym too, so erasure and export find every link of a subject.
"""

from __future__ import annotations

from typing import Any

from chatlake.db import AppPool, tenant_transaction
from chatlake.events import default_user_id
from chatlake.pii import pseudonymize, tenant_pseudonym_key
from chatlake.tenants import record_audit
from realtime.engine.tenant_cache import TenantCache

CACHE_SECONDS = 5.0  # how long another replica may miss a tenant's first link


class Identities:
    def __init__(self, pool: AppPool, pseudonym_key: str) -> None:
        self.pool = pool
        self.pseudonym_key = pseudonym_key
        # whether the tenant links identities at all: most do not, and their messages
        # then need no lookup
        self._linking: TenantCache[bool] = TenantCache(CACHE_SECONDS)

    async def _has_links(self, tenant_id: str) -> bool:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute("select exists (select 1 from channel_identities) as any")
            row = await cur.fetchone()
        return bool(row and row["any"])

    def user_key(self, tenant_id: str, user_id: str) -> str:
        return pseudonymize(user_id, tenant_pseudonym_key(self.pseudonym_key, tenant_id))

    async def resolve(self, tenant_id: str, channel: str, sender: str) -> str:
        """The user a channel's sender is (linked, or the channel's own id)."""
        name = "twilio" if channel == "twilio-voice" else channel
        if not await self._linking.get(tenant_id, self._has_links):
            return default_user_id(name, sender)
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                "select user_id from channel_identities where channel = %s and external_id = %s",
                (name, sender),
            )
            row = await cur.fetchone()
        return str(row["user_id"]) if row else default_user_id(name, sender)

    async def link(
        self, tenant_id: str, user_id: str, channel: str, external_id: str, actor: str
    ) -> dict[str, Any]:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            await conn.execute(
                """insert into channel_identities
                     (tenant_id, channel, external_id, user_id, user_key)
                   values (%s, %s, %s, %s, %s)
                   on conflict (tenant_id, channel, external_id) do update
                   set user_id = excluded.user_id, user_key = excluded.user_key,
                       created_at = now()""",
                (tenant_id, channel, external_id, user_id, self.user_key(tenant_id, user_id)),
            )
            # the audit log keeps no identifier of the subject, only the channel
            await record_audit(conn, tenant_id, actor, "identity.linked", channel)
        self._linking.drop(tenant_id)
        return {"user_id": user_id, "channel": channel, "external_id": external_id}

    async def unlink(self, tenant_id: str, channel: str, external_id: str, actor: str) -> bool:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                "delete from channel_identities where channel = %s and external_id = %s",
                (channel, external_id),
            )
            if cur.rowcount:
                await record_audit(conn, tenant_id, actor, "identity.unlinked", channel)
        return bool(cur.rowcount)

    async def of_user(self, tenant_id: str, user_id: str) -> list[dict[str, Any]]:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """select channel, external_id, created_at from channel_identities
                   where user_key = %s order by channel, external_id""",
                (self.user_key(tenant_id, user_id),),
            )
            rows = await cur.fetchall()
        return [
            {
                "user_id": user_id,
                "channel": r["channel"],
                "external_id": r["external_id"],
                "created_at": r["created_at"].isoformat(),
            }
            for r in rows
        ]
