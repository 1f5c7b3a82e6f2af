"""Who is calling: tenant API keys (bearer) and the platform admin token.

A key is checked against Redis first. Only a key Redis does not know reaches PostgreSQL,
and only when its tenant exists (realtime/gate.py answers that from Redis); a client
address that keeps failing is refused with 429 before anything is looked up, so random
keys cannot take the connection pool from everyone else.
"""

from __future__ import annotations

import hmac

from chatlake.apikeys import ParsedKey, parse_api_key
from realtime.api.errors import ApiError, unauthorized
from realtime.observability import RATE_LIMITED
from realtime.platform import Platform
from realtime.state import Admission, Budget


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def parse_bearer(token: str | None) -> ParsedKey:
    if not token:
        raise unauthorized("missing API key: send `Authorization: Bearer <api key>`")
    key = parse_api_key(token)
    if key is None:
        raise unauthorized("invalid API key")
    return key


def check_admin_token(platform: Platform, token: str | None) -> None:
    expected = platform.settings.secret("admin_token")
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        raise unauthorized("this call needs the platform admin token")


def too_many_failures(retry_after: int) -> ApiError:
    return ApiError(
        429,
        f"too many failed authentications from this address; retry after {retry_after} s",
        code="auth_rate_limited",
        headers={"Retry-After": str(retry_after)},
    )


async def refuse(platform: Platform, client: str | None, message: str) -> ApiError:
    """A failed authentication: counted against the client's address."""
    await platform.failed_auth.failed(client)
    return unauthorized(message)


async def admit(
    platform: Platform,
    key: ParsedKey,
    *,
    rate_limited: bool = False,
    conversation_id: str | None = None,
    budgets: list[Budget] | None = None,
    client: str | None = None,
) -> Admission:
    """Authenticate, rate-limit and load the conversation in one Redis round trip.

    On a cache miss the key is checked in PostgreSQL (unless its tenant is known not to
    exist, or `client`, the caller's address, failed too often), the cache refilled, and
    the round trip repeated once.
    """
    admission = await platform.store.admit(
        key, rate_limited=rate_limited, conversation_id=conversation_id, budgets=budgets
    )
    if admission.status in ("miss", "unauthorized"):
        wait = await platform.failed_auth.blocked(client)
        if wait:
            raise too_many_failures(wait)
    if admission.status == "miss":
        if await platform.tenant_directory.exists(key.tenant_id) is False:
            raise await refuse(platform, client, "invalid API key")
        if not await platform.control.authenticate_from_store(key):
            raise await refuse(platform, client, "invalid API key")
        admission = await platform.store.admit(
            key, rate_limited=rate_limited, conversation_id=conversation_id, budgets=budgets
        )
    match admission.status:
        case "ok" | "no_conversation":
            return admission
        case "unauthorized":
            raise await refuse(platform, client, "invalid API key")
        case "suspended":
            raise ApiError(403, "this tenant is suspended", code="tenant_suspended")
        case "limited":
            RATE_LIMITED.inc()
            raise ApiError(
                429,
                f"rate limit exceeded; retry after {admission.retry_after} s",
                headers={"Retry-After": str(admission.retry_after)},
            )
    raise ApiError(503, "authentication cache unavailable; retry", code="unavailable")
