"""Dependencies shared by the routers, as `Annotated` aliases.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread hop
per request that the hot path cannot afford.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatlake.apikeys import ParsedKey
from realtime.auth import admit, check_admin_token, parse_bearer
from realtime.platform import Platform

bearer = HTTPBearer(auto_error=False, description="A tenant API key or the platform admin token")


async def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def get_api_key(credentials: Credentials) -> ParsedKey:
    return parse_bearer(credentials.credentials if credentials else None)


ApiKeyDep = Annotated[ParsedKey, Depends(get_api_key)]


@dataclass(frozen=True)
class TenantContext:
    tenant_id: str
    key_id: str

    @property
    def actor(self) -> str:
        return f"api_key:{self.key_id}"


def client_address(request: Request) -> str | None:
    """The caller's address as the per-address limits count it (behind a proxy: as the
    server's proxy settings resolve it). An IPv6 address counts as its /64: one host
    usually has a whole /64 and could otherwise take a new address for every try."""
    if not request.client:
        return None
    try:
        ip = ipaddress.ip_address(request.client.host)
    except ValueError:  # not an address (a test client's name, a Unix socket's)
        return request.client.host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


async def get_tenant(request: Request, platform: PlatformDep, key: ApiKeyDep) -> TenantContext:
    admission = await admit(platform, key, client=client_address(request))
    assert admission.key_id is not None
    return TenantContext(tenant_id=key.tenant_id, key_id=admission.key_id)


TenantDep = Annotated[TenantContext, Depends(get_tenant)]


async def require_admin(platform: PlatformDep, credentials: Credentials) -> None:
    check_admin_token(platform, credentials.credentials if credentials else None)


AdminDep = Depends(require_admin)
