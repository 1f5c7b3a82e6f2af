"""The URLs tenants configure (model-chain endpoints, channel APIs) and the platform then
calls: outside development they must be https and resolve to public addresses, or a
tenant could make the platform call its own network (SSRF)."""

from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import urlsplit


async def url_problem(url: str, allow_private: bool) -> str | None:
    """Why a tenant's channel URL may not be called (a private, loopback or link-local
    address, as it resolves now; plain http outside development), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    if allow_private:
        return None
    if parts.scheme != "https":
        return f"{url!r}: channel APIs are called over https only"
    try:
        found = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443)
    except OSError as exc:
        return f"{parts.hostname} does not resolve: {exc}"
    for *_, address in found:
        ip = ipaddress.ip_address(address[0])
        if not ip.is_global or ip.is_multicast:
            return f"{parts.hostname} resolves to a non-public address ({ip})"
    return None
