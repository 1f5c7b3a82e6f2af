"""Each tenant's configuration of each channel: secrets sealed under the master key (with
the tenant and channel as context, like the model chain's provider keys), never returned.

A configured channel gets an API key of its own (named `channel:<name>`, listed with the
tenant's keys): its webhooks are admitted, rate-limited and answered exactly as
`POST /v1/messages` is with that key. Revoking it stops the channel until it is PUT again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from chatlake.apikeys import ParsedKey, key_digest
from chatlake.db import AppPool, tenant_transaction
from chatlake.secrets import SecretBox
from chatlake.tenants import ControlPlane, record_audit
from realtime.engine.tenant_cache import TenantCache

# What each configurable channel takes (twilio-voice shares twilio's configuration).
SECRETS: dict[str, tuple[str, ...]] = {
    "web": (),
    "whatsapp": ("app_secret", "verify_token", "access_token", "phone_number_id"),
    "messenger": ("app_secret", "verify_token", "access_token", "phone_number_id", "page_id"),
    "slack": ("signing_secret", "bot_token"),
    "teams": ("app_id", "app_password", "openid_metadata_url"),
    "twilio": ("account_sid", "auth_token"),
}
WEBHOOK_CHANNELS = ("whatsapp", "messenger", "slack", "teams", "twilio", "twilio-voice")
CACHE_SECONDS = 5.0  # how long another replica may verify with the previous secrets


def config_channel(channel: str) -> str:
    """The configuration a channel's webhooks use."""
    return "twilio" if channel == "twilio-voice" else channel


@dataclass
class ChannelConfig:
    tenant_id: str
    channel: str
    enabled: bool
    secrets: dict[str, str]  # opened: for verification and the send clients only
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def api_base_url(self) -> str | None:
        return self.options.get("api_base_url")

    @property
    def key(self) -> ParsedKey:
        return ParsedKey(self.tenant_id, bytes.fromhex(self.options["key_digest"]))


class ChannelStore:
    def __init__(self, pool: AppPool, box: SecretBox, control: ControlPlane) -> None:
        self.pool = pool
        self.box = box
        self.control = control
        self._cache: TenantCache[ChannelConfig | None] = TenantCache(CACHE_SECONDS)

    @staticmethod
    def _context(tenant_id: str, channel: str) -> str:
        return f"{tenant_id}:channel:{channel}"

    async def _row(self, tenant_id: str, channel: str) -> dict[str, Any] | None:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                "select enabled, sealed_secrets, options, updated_at from channel_configs "
                "where channel = %s",
                (channel,),
            )
            return await cur.fetchone()

    async def config(
        self, tenant_id: str, channel: str, *, keep_miss: bool = False
    ) -> ChannelConfig | None:
        """The channel's configuration with its secrets opened (cached a few seconds). A
        miss is cached only with `keep_miss` (a tenant known to exist): any id may be asked
        for, and misses of made-up tenants must not fill the cache."""
        name = config_channel(channel)
        cache_key = f"{tenant_id}/{name}"

        async def load(_: str) -> ChannelConfig | None:
            row = await self._row(tenant_id, name)
            if row is None:
                return None
            context = self._context(tenant_id, name)
            opened = {k: self.box.open(v, context) for k, v in row["sealed_secrets"].items()}
            return ChannelConfig(tenant_id, name, row["enabled"], opened, row["options"])

        config = await self._cache.get(cache_key, load)
        if config is None and not keep_miss:
            self._cache.drop(cache_key)
        return config

    async def describe(self, tenant_id: str, channel: str) -> dict[str, Any] | None:
        """The configuration as the API shows it: which secrets are set, never their values."""
        row = await self._row(tenant_id, channel)
        if row is None:
            return None
        options = row["options"]
        shown = {
            "channel": channel,
            "enabled": row["enabled"],
            "secrets_set": sorted(row["sealed_secrets"]),
            "api_base_url": options.get("api_base_url"),
            "rate_limit_per_s": options.get("rate_limit_per_s"),
            "updated_at": row["updated_at"].isoformat(),
        }
        if channel == "web":
            shown["widget_key"] = options.get("widget_key")
            shown["allowed_origins"] = options.get("allowed_origins", [])
        return shown

    async def put(
        self, tenant_id: str, channel: str, body: dict[str, Any], actor: str
    ) -> dict[str, Any]:
        """Save the channel. Secrets not sent keep their stored values; a secret sent as
        an empty string is removed. A new `api_base_url` drops every stored secret not
        sent again in the same request (as the model chain drops a key whose endpoint
        changed): otherwise whoever can PUT could point the sends at their own host and
        be handed the bot token."""
        context = self._context(tenant_id, channel)
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                "select enabled, sealed_secrets, options from channel_configs "
                "where channel = %s for update",
                (channel,),
            )
            row = await cur.fetchone()
            sealed: dict[str, str] = dict(row["sealed_secrets"]) if row else {}
            enabled = bool(body.get("enabled", row["enabled"] if row else True))
            options: dict[str, Any] = dict(row["options"]) if row else {}
            moved = "api_base_url" in body and not _same_endpoint(
                options.get("api_base_url"), body["api_base_url"]
            )
            if moved:
                sealed = {}
            for name, value in (body.get("secrets") or {}).items():
                if value:
                    sealed[name] = self.box.seal(value, context)
                else:
                    sealed.pop(name, None)
            for name in ("api_base_url", "rate_limit_per_s", "allowed_origins"):
                if name in body:
                    if body[name] is None:
                        options.pop(name, None)
                    else:
                        options[name] = body[name]
            if channel == "web" and "widget_key" not in options:
                # publishable: it only lets the allowed origins chat, as any visitor could
                options["widget_key"] = f"clkw_{secrets.token_urlsafe(24)}"
            if not await self._key_is_live(conn, options.get("key_digest")):
                issued = await self.control._insert_key(conn, tenant_id, f"channel:{channel}")
                options["key_digest"] = _digest_hex(issued.api_key)
            await conn.execute(
                """insert into channel_configs
                     (tenant_id, channel, enabled, sealed_secrets, options)
                   values (%s, %s, %s, %s, %s)
                   on conflict (tenant_id, channel) do update
                   set enabled = excluded.enabled, sealed_secrets = excluded.sealed_secrets,
                       options = excluded.options, updated_at = now()""",
                (
                    tenant_id,
                    channel,
                    enabled,
                    orjson.dumps(sealed).decode(),
                    orjson.dumps(options).decode(),
                ),
            )
            await record_audit(
                conn,
                tenant_id,
                actor,
                "channel.saved",
                channel,
                {"enabled": enabled, "secrets_set": sorted(sealed), "endpoint_changed": moved},
            )
        self._cache.drop(f"{tenant_id}/{channel}")
        shown = await self.describe(tenant_id, channel)
        assert shown is not None
        return shown

    @staticmethod
    async def _key_is_live(conn: Any, digest_hex: str | None) -> bool:
        if not digest_hex:
            return False
        cur = await conn.execute(
            "select 1 from api_keys where key_hash = %s and revoked_at is null",
            (bytes.fromhex(digest_hex),),
        )
        return await cur.fetchone() is not None


def _same_endpoint(stored: str | None, sent: str | None) -> bool:
    return (stored or "").rstrip("/") == (sent or "").rstrip("/")


def _digest_hex(api_key: str) -> str:
    return key_digest(api_key).hex()
