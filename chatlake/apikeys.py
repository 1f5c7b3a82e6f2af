"""Tenant API keys: `clk_<tenant id>_<secret>`; only a SHA-256 hash is ever stored.

The tenant id inside the key routes the lookup to the tenant's own rows and Redis slot;
the secret (256 random bits) is what authenticates. A fast hash is the right one here: the
secret is random, not a password, so there is nothing for a slow hash to protect.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from functools import lru_cache
from uuid import UUID

KEY_SCHEME = "clk"


@dataclass(frozen=True)
class ParsedKey:
    tenant_id: str
    digest: bytes

    @property
    def digest_hex(self) -> str:
        return self.digest.hex()


def new_api_key(tenant_id: UUID | str) -> str:
    return f"{KEY_SCHEME}_{UUID(str(tenant_id)).hex}_{secrets.token_urlsafe(32)}"


def key_digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def display_prefix(api_key: str) -> str:
    """What a key list shows: enough to recognise a key, never enough to use it."""
    return f"{api_key[:12]}…{api_key[-4:]}"


@lru_cache(maxsize=4096)
def parse_api_key(api_key: str) -> ParsedKey | None:
    """The tenant and digest of a well-formed key (cached: it is asked on every request)."""
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[2]) < 32:
        return None
    try:
        tenant_id = UUID(hex=parts[1])
    except ValueError:
        return None
    if tenant_id.hex != parts[1]:
        return None
    return ParsedKey(tenant_id=str(tenant_id), digest=key_digest(api_key))
