"""Channels over HTTP: tenants' channel configuration, identity links, the web widget's
API (its origin and key checked here, its CORS headers), and every channel's webhook URL.

What a webhook's messages go through (verification, the engine's turn, the channel's
outbox, the messages kept over budget) is realtime/channels/dispatch.py; this module
reads the request and writes the response.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field, ValidationError

from realtime.api.deps import PlatformDep, TenantDep, client_address
from realtime.api.errors import ApiError
from realtime.api.schemas import StrictModel, error_responses
from realtime.channels import dispatch, signatures, web
from realtime.channels.config import SECRETS, ChannelConfig, config_channel
from realtime.channels.delivery import dead_letters
from realtime.channels.model import Inbound
from realtime.observability import CHANNEL_REFUSED
from realtime.outbound import url_problem
from realtime.platform import Platform

router = APIRouter(prefix="/v1", tags=["channels"])
ERRORS = error_responses(401, 404, 422)


# Configuration


class ChannelIn(StrictModel):
    enabled: bool = True
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="The channel's secrets; one left out keeps its stored value, "
        "an empty string removes it. Never returned.",
    )
    api_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=500,
        description="The channel API's base URL (default: the provider's)",
    )
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=1000)
    allowed_origins: list[str] | None = Field(
        default=None,
        max_length=50,
        description="Web widget only: the page origins allowed to use the widget key",
    )


def _configurable(channel: str) -> str:
    if channel not in SECRETS:
        raise ApiError(404, f"no channel {channel!r}: one of {', '.join(SECRETS)}")
    return channel


@router.get("/channels/web/embed", response_class=HTMLResponse, responses=ERRORS)
async def web_embed(request: Request, tenant: TenantDep, platform: PlatformDep) -> Response:
    """The tenant's web-widget snippet: paste it into a page of an allowed origin."""
    config = await platform.channels.config(tenant.tenant_id, "web")
    if config is None or not config.enabled:
        raise ApiError(
            404,
            "the web channel is not configured: PUT /v1/channels/web "
            '{"allowed_origins": ["https://your.site"]} first',
            code="channel_not_configured",
        )
    base = str(request.base_url).rstrip("/")
    return HTMLResponse(web.embed_snippet(base, tenant.tenant_id, config.options["widget_key"]))


@router.get("/channels/web/widget.js", include_in_schema=False)
async def widget_script() -> Response:
    return Response(
        web.widget_js(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )


@router.get("/channels/{channel}/dead-letters", responses=ERRORS)
async def get_dead_letters(
    channel: str,
    tenant: TenantDep,
    platform: PlatformDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Replies the channel's API would not take after every retry, newest first."""
    _configurable(channel)
    found = await dead_letters(platform.redis, tenant.tenant_id, channel, limit)
    return {"dead_letters": found}


@router.get("/channels/{channel}", responses=ERRORS)
async def get_channel(channel: str, tenant: TenantDep, platform: PlatformDep) -> dict[str, Any]:
    """The channel's configuration: which secrets are set, never their values."""
    shown = await platform.channels.describe(tenant.tenant_id, _configurable(channel))
    if shown is None:
        raise ApiError(
            404, f"the {channel} channel is not configured", code="channel_not_configured"
        )
    return {**shown, "webhook_url": _webhook_url(channel, tenant.tenant_id)}


def _webhook_url(channel: str, tenant_id: str) -> str:
    return f"/v1/channels/{channel}/{tenant_id}"


@router.put("/channels/{channel}", responses=ERRORS)
async def put_channel(
    channel: str, body: ChannelIn, tenant: TenantDep, platform: PlatformDep
) -> dict[str, Any]:
    """Configure the channel; its secrets are stored encrypted and never returned."""
    _configurable(channel)
    unknown = sorted(set(body.secrets) - set(SECRETS[channel]))
    if unknown:
        raise ApiError(
            422,
            f"unknown secret(s) for {channel}: {', '.join(unknown)}; "
            f"expected: {', '.join(SECRETS[channel]) or 'none'}",
            code="validation_error",
        )
    if body.allowed_origins is not None and channel != "web":
        raise ApiError(422, "allowed_origins is for the web channel only", code="validation_error")
    for origin in body.allowed_origins or []:
        if not origin.startswith(("http://", "https://")) or origin.rstrip("/") != origin:
            raise ApiError(
                422, f"an origin is scheme://host[:port], not {origin!r}", code="validation_error"
            )
    allow_private = platform.settings.allow_private_urls
    for name, url in (
        ("api_base_url", body.api_base_url),
        ("openid_metadata_url", body.secrets.get("openid_metadata_url")),
    ):
        problem = await url_problem(url, allow_private) if url else None
        if problem:
            raise ApiError(422, f"{name}: {problem}", code="validation_error")
    shown = await platform.channels.put(
        tenant.tenant_id, channel, body.model_dump(exclude_unset=True), tenant.actor
    )
    return {**shown, "webhook_url": _webhook_url(channel, tenant.tenant_id)}


# Identity links


class IdentityIn(StrictModel):
    user_id: str = Field(min_length=1, max_length=256)
    channel: str = Field(description="whatsapp, messenger, slack, teams, twilio or web")
    external_id: str = Field(
        min_length=1,
        max_length=256,
        description="The user's id on the channel (phone number, PSID, …)",
    )


@router.post("/identities", status_code=201, responses=ERRORS)
async def link_identity(
    body: IdentityIn, tenant: TenantDep, platform: PlatformDep
) -> dict[str, Any]:
    """Link a channel's sender to the tenant's user: one context follows them everywhere."""
    _configurable(config_channel(body.channel))
    return await platform.identities.link(
        tenant.tenant_id,
        body.user_id,
        config_channel(body.channel),
        body.external_id,
        tenant.actor,
    )


@router.get("/identities", responses=ERRORS)
async def list_identities(
    tenant: TenantDep,
    platform: PlatformDep,
    user_id: Annotated[str, Query(min_length=1, max_length=256)],
) -> dict[str, Any]:
    return {"identities": await platform.identities.of_user(tenant.tenant_id, user_id)}


@router.delete("/identities/{channel}/{external_id}", status_code=204, responses=ERRORS)
async def unlink_identity(
    channel: str, external_id: str, tenant: TenantDep, platform: PlatformDep
) -> Response:
    if not await platform.identities.unlink(
        tenant.tenant_id, config_channel(channel), external_id, tenant.actor
    ):
        raise ApiError(404, "no such identity link")
    return Response(status_code=204)


# Webhooks


def _request_url(request: Request) -> str:
    """The URL as the provider requested it (behind a proxy: X-Forwarded-Proto/Host)."""
    url = request.url
    proto = request.headers.get("x-forwarded-proto")
    host = request.headers.get("x-forwarded-host")
    if proto or host:
        url = url.replace(scheme=proto or url.scheme, netloc=host or url.netloc)
    return str(url)


@router.get("/channels/{channel}/{tenant_id}", include_in_schema=True)
async def webhook_handshake(
    channel: str, tenant_id: str, request: Request, platform: PlatformDep
) -> Response:
    """Meta's verify handshake (WhatsApp, Messenger); the web widget's conversation."""
    if channel == "web":
        return await _web_history(request, tenant_id, platform)
    config = await dispatch.channel_config(platform, channel, tenant_id, client_address(request))
    return PlainTextResponse(dispatch.handshake(config, channel, request.query_params))


@router.options("/channels/web/{tenant_id}", include_in_schema=False)
async def web_preflight(tenant_id: str, request: Request, platform: PlatformDep) -> Response:
    config = await dispatch.channel_config(platform, "web", tenant_id, client_address(request))
    origin = _allowed_origin(config, request)
    return Response(
        status_code=204,
        headers={
            **_cors(origin),
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "Content-Type, X-Widget-Key",
            "Access-Control-Max-Age": "600",
        },
    )


@router.post("/channels/{channel}/{tenant_id}", include_in_schema=True)
async def webhook(
    channel: str, tenant_id: str, request: Request, platform: PlatformDep
) -> Response:
    """A channel's webhook: verified, then each message answered through the engine."""
    started = time.perf_counter()
    config = await dispatch.channel_config(platform, channel, tenant_id, client_address(request))
    raw = await request.body()
    if channel == "web":  # the widget's messages
        return await _web_message(request, config, raw, platform, started)
    received = dispatch.Webhook(raw, request.headers, _request_url(request))
    reply = await dispatch.receive(platform, config, channel, received, started)
    return Response(reply.body, media_type=reply.media_type)


# The web widget's API


class WidgetMessage(BaseModel):
    visitor_id: str = Field(pattern=web.VISITOR_ID.pattern)
    text: str = Field(default="", max_length=4000)
    type: str = Field(default="text", pattern=r"^(text|postback|quick_reply)$")
    payload: dict[str, Any] | None = None


def _allowed_origin(config: ChannelConfig, request: Request) -> str:
    origin = request.headers.get("origin", "")
    allowed = config.options.get("allowed_origins") or []
    if origin not in allowed:
        CHANNEL_REFUSED.labels("web", "origin").inc()
        raise ApiError(
            403, f"origin {origin or '(none)'} may not use this widget", code="channel_origin"
        )
    return origin


def _cors(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _widget(config: ChannelConfig, request: Request) -> str:
    origin = _allowed_origin(config, request)
    key = request.headers.get("x-widget-key", "")
    stored = config.options.get("widget_key", "")
    if not key or not signatures.constant_time_equal(stored, key):
        CHANNEL_REFUSED.labels("web", "signature").inc()
        raise ApiError(401, "invalid widget key", code="channel_signature", headers=_cors(origin))
    return origin


async def _web_message(
    request: Request, config: ChannelConfig, raw: bytes, platform: Platform, started: float
) -> Response:
    origin = _widget(config, request)
    try:
        message = WidgetMessage.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(
            422, f"{where}: {first['msg']}", code="validation_error", headers=_cors(origin)
        ) from None
    if not message.text.strip():
        raise ApiError(
            422, "text: the message is empty", code="validation_error", headers=_cors(origin)
        )
    inbound = Inbound(message.visitor_id, "", message.type, message.text, payload=message.payload)
    try:
        result = await dispatch.answer_widget(
            platform, config, inbound, client_address(request), started
        )
    except ApiError as exc:
        exc.headers = {**(exc.headers or {}), **_cors(origin)}
        raise
    shown = {k: result[k] for k in ("conversation_id", "message_id", "replies", "handoff")}
    return Response(orjson.dumps(shown), media_type="application/json", headers=_cors(origin))


async def _web_history(request: Request, tenant_id: str, platform: Platform) -> Response:
    config = await dispatch.channel_config(platform, "web", tenant_id, client_address(request))
    origin = _widget(config, request)
    visitor = request.query_params.get("visitor_id", "")
    if not web.VISITOR_ID.match(visitor):
        raise ApiError(
            422,
            "visitor_id: 16 to 64 letters, digits, - or _",
            code="validation_error",
            headers=_cors(origin),
        )
    body = await dispatch.widget_history(platform, tenant_id, visitor)
    return Response(orjson.dumps(body), media_type="application/json", headers=_cors(origin))
