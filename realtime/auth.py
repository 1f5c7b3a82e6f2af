"""Who is calling: tenant API keys (bearer) and the platform admin token."""

from __future__ import annotations

import hmac

from chatlake.apikeys import ParsedKey, parse_api_key
from realtime.api.errors import ApiError, unauthorized
from realtime.observability import RATE_LIMITED
from realtime.platform import Platform
from realtime.state import Admission


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


async def admit(
    platform: Platform,
    key: ParsedKey,
    *,
    rate_limited: bool = False,
    conversation_id: str | None = None,
) -> Admission:
    """Authenticate, rate-limit and load the conversation in one Redis round trip.

    On a cache miss the key is checked in PostgreSQL, the cache refilled, and the round
    trip repeated once.
    """
    admission = await platform.store.admit(
        key, rate_limited=rate_limited, conversation_id=conversation_id
    )
    if admission.status == "miss":
        if not await platform.control.authenticate_from_store(key):
            raise unauthorized("invalid API key")
        admission = await platform.store.admit(
            key, rate_limited=rate_limited, conversation_id=conversation_id
        )
    match admission.status:
        case "ok" | "no_conversation":
            return admission
        case "unauthorized":
            raise unauthorized("invalid API key")
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
