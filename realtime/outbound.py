"""The URLs tenants configure (model-chain endpoints, channel APIs, the Teams OpenID
documents) and the platform then calls: outside development they must be https and
resolve to public addresses, or a tenant could make the platform call its own network
(SSRF)."""

from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are the IPv4
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: translates to anything
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated `::a.b.c.d`


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to (IPv4-mapped, IPv4-compatible, NAT64,
    6to4, Teredo), which is where a connection to it ends up; None for a plain one."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # `::` and `::1` are not
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether a connection to `ip` stays on the public internet: the address is global,
    not multicast, and so is any IPv4 address it embeds."""
    if ip in _NAT64_LOCAL or not ip.is_global or ip.is_multicast:
        return False
    inner = embedded_ipv4(ip)
    return inner is None or (inner.is_global and not inner.is_multicast)


async def url_problem(url: str, allow_private: bool) -> str | None:
    """Why a tenant's URL may not be called (a private, loopback or link-local address,
    or one that embeds such an IPv4 address, as it resolves now; plain http outside
    development), or None."""
    try:
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
        return f"{url!r} is not an http(s) URL"
    if parts.scheme not in ("http", "https") or not hostname:
        return f"{url!r} is not an http(s) URL"
    if allow_private:
        return None
    if parts.scheme != "https":
        return f"{url!r}: channel APIs are called over https only"
    try:
        found = await asyncio.get_running_loop().getaddrinfo(hostname, port or 443)
    except OSError as exc:
        return f"{hostname} does not resolve: {exc}"
    except UnicodeError:  # a label IDNA cannot encode (empty, or over 63 characters)
        return f"{hostname} does not resolve: not a valid host name"
    for *_, address in found:
        ip = ipaddress.ip_address(address[0].split("%", 1)[0])  # without an IPv6 zone
        if not is_public(ip):
            return f"{hostname} resolves to a non-public address ({ip})"
    return None
