"""Channels: tenants' configuration, identity links, the web widget, and every channel's
webhook, verified before anything else reads it.

A webhook's messages go through the same path as `POST /v1/messages` (with the channel's
own API key: admitted, rate-limited, answered, streamed into the lake with their channel);
the replies are rendered for the channel and sent through its API after the webhook is
answered (realtime/channels/delivery.py). A refused webhook changes nothing and is counted
on /metrics (`chatlake_channel_webhooks_refused_total`).

One source of messages must not starve another: each channel's webhooks have a rate-limit
budget of their own, and the web widget (whose key is public) is limited per channel,
per visitor and per client address. A provider's message over its channel's budget is
acknowledged (providers such as Twilio do not retry) and kept in the tenant's channel
inbox; the recovery loop answers it once the budget allows. A webhook URL naming a tenant
that does not exist is answered from Redis (realtime/gate.py), without PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import parse_qsl
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field, ValidationError

from chatlake.keyspace import TenantKeyspace
from chatlake.secrets import SecretError
from realtime.api.deps import PlatformDep, TenantDep, client_address
from realtime.api.errors import ApiError
from realtime.api.routes.messages import converse
from realtime.api.schemas import MessageIn, StrictModel, error_responses
from realtime.auth import too_many_failures
from realtime.channels import messenger, signatures, slack, teams, twilio, web, whatsapp
from realtime.channels.base import PayloadError
from realtime.channels.config import SECRETS, WEBHOOK_CHANNELS, ChannelConfig, config_channel
from realtime.channels.delivery import Outgoing, dead_letters, inbound_record
from realtime.channels.model import Inbound, Rendered, as_text
from realtime.observability import CHANNEL_DUPLICATES, CHANNEL_REFUSED
from realtime.outbound import url_problem
from realtime.platform import Platform
from realtime.state import Budget

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["channels"])
ERRORS = error_responses(401, 404, 422)
RECEIPTS = ("status", "typing", "reaction")  # acknowledged, never answered
# The web widget's key is public and its Origin header is the caller's to set: besides the
# web channel's own budget, each visitor and each client address gets at most this many
# messages a minute (or the tenant's limit, if lower).
WIDGET_VISITOR_PER_MINUTE = 20
WIDGET_ADDRESS_PER_MINUTE = 60
RENDERERS = {
    "whatsapp": whatsapp.render,
    "messenger": messenger.render,
    "slack": slack.render,
    "teams": teams.render,
    "twilio": twilio.render,
    "web": web.render,
}


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


def _refused(channel: str, reason: str, status: int, message: str) -> ApiError:
    CHANNEL_REFUSED.labels(channel, reason).inc()
    return ApiError(status, message, code=f"channel_{reason}")


async def _config(
    platform: Platform, channel: str, tenant_id: str, client: str | None = None
) -> ChannelConfig:
    """The channel's configuration, or the request refused (and counted). A tenant the
    directory does not know is refused from Redis alone, and counted against `client`."""
    if channel not in WEBHOOK_CHANNELS and channel != "web":
        raise _refused(
            channel if channel in SECRETS else "unknown", "unknown", 404, f"no channel {channel!r}"
        )
    try:
        tenant_id = str(UUID(tenant_id))  # one spelling: the keys and contexts depend on it
    except ValueError:
        raise _refused(channel, "not_configured", 404, "no such tenant or channel") from None
    known = await platform.tenant_directory.exists(tenant_id)
    if known is False:
        wait = await platform.failed_auth.blocked(client)
        if wait:
            raise too_many_failures(wait)
        await platform.failed_auth.failed(client)
        raise _refused(channel, "not_configured", 404, "no such tenant or channel")
    try:
        # a known tenant's id is public (the widget shows it): its unconfigured channels
        # are remembered too, or each such request would cost a PostgreSQL transaction
        config = await platform.channels.config(tenant_id, channel, keep_miss=known is True)
    except SecretError:
        raise ApiError(
            503,
            f"the {channel} channel's secrets cannot be opened with this "
            "master key; the operator must fix CHATLAKE_MASTER_KEY(_PREVIOUS)",
            code="unavailable",
        ) from None
    if config is None:
        raise _refused(channel, "not_configured", 404, "no such tenant or channel")
    if not config.enabled:
        raise _refused(channel, "disabled", 403, f"the {channel} channel is disabled")
    return config


def _signature_refused(channel: str, exc: Exception) -> ApiError:
    return _refused(channel, "signature", 401, f"webhook refused: {exc}")


def _json(channel: str, raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, f"the {channel} webhook's body is not JSON", code="malformed") from None


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
    config = await _config(platform, channel, tenant_id, client_address(request))
    if channel not in ("whatsapp", "messenger"):
        raise ApiError(405, f"the {channel} webhook takes POST only", code="method_not_allowed")
    params = request.query_params
    expected = config.secrets.get("verify_token", "")
    given = params.get("hub.verify_token", "")
    if (
        params.get("hub.mode") != "subscribe"
        or not expected
        or not signatures.constant_time_equal(expected, given)
    ):
        raise _refused(channel, "signature", 403, "hub.verify_token does not match")
    return PlainTextResponse(params.get("hub.challenge", ""))


@router.options("/channels/web/{tenant_id}", include_in_schema=False)
async def web_preflight(tenant_id: str, request: Request, platform: PlatformDep) -> Response:
    config = await _config(platform, "web", tenant_id, client_address(request))
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
    config = await _config(platform, channel, tenant_id, client_address(request))
    raw = await request.body()
    match channel:
        case "whatsapp" | "messenger":
            try:
                signatures.verify_meta(
                    config.secrets.get("app_secret"),
                    raw,
                    request.headers.get("x-hub-signature-256"),
                )
            except signatures.SignatureError as exc:
                raise _signature_refused(channel, exc) from None
            module = whatsapp if channel == "whatsapp" else messenger
            inbounds = _parsed(channel, lambda: module.parse(_json(channel, raw)))
        case "slack":
            try:
                signatures.verify_slack(
                    config.secrets.get("signing_secret"),
                    raw,
                    request.headers.get("x-slack-request-timestamp"),
                    request.headers.get("x-slack-signature"),
                )
            except signatures.SignatureError as exc:
                raise _signature_refused(channel, exc) from None
            if request.headers.get("content-type", "").startswith("application/x-www-form"):
                form = dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))
                payload = _json(channel, form.get("payload", "").encode())
                inbounds = _parsed(channel, lambda: slack.parse_interaction(payload))
            else:
                event = _json(channel, raw)
                if isinstance(event, dict) and event.get("type") == "url_verification":
                    return Response(
                        orjson.dumps({"challenge": event.get("challenge", "")}),
                        media_type="application/json",
                    )
                inbounds = _parsed(channel, lambda: slack.parse_event(event))
        case "teams":
            activity = _json(channel, raw)
            if not isinstance(activity, dict):
                raise ApiError(400, "an activity is a JSON object", code="malformed")
            try:
                await teams.verify(
                    platform.teams_keys, config, request.headers.get("authorization"), activity
                )
            except signatures.SignatureError as exc:
                raise _signature_refused(channel, exc) from None
            inbounds = _parsed(channel, lambda: teams.parse(activity))
            problem = await url_problem(
                str(activity.get("serviceUrl")), platform.settings.allow_private_urls
            )
            if problem:
                raise _refused(channel, "service_url", 400, f"serviceUrl refused: {problem}")
        case "twilio" | "twilio-voice":
            params = parse_qsl(raw.decode(errors="replace"), keep_blank_values=True)
            try:
                signatures.verify_twilio(
                    config.secrets.get("auth_token"),
                    _request_url(request),
                    params,
                    request.headers.get("x-twilio-signature"),
                )
            except signatures.SignatureError as exc:
                raise _signature_refused(channel, exc) from None
            if channel == "twilio-voice":
                return await _voice(platform, config, request, dict(params), started)
            inbounds = _parsed(channel, lambda: twilio.parse_sms(dict(params)))
            await _handle(platform, config, channel, inbounds, started)  # answered or kept
            return Response(twilio.EMPTY_TWIML, media_type="text/xml")
        case _:  # web: the widget posts through its own route below
            return await _web_message(request, config, raw, platform, started)
    handled, deferred = await _handle(platform, config, channel, inbounds, started)
    body: dict[str, Any] = {"received": len(inbounds), "answered": handled}
    if deferred:
        body["deferred"] = deferred  # over the channel's budget: answered a little later
    return Response(orjson.dumps(body), media_type="application/json")


def _parsed(channel: str, parse: Any) -> list[Inbound]:
    try:
        found: list[Inbound] = parse()
    except (PayloadError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ApiError(400, f"not a {channel} webhook payload: {exc}", code="malformed") from None
    return found


async def _answer(
    platform: Platform,
    config: ChannelConfig,
    channel: str,
    inbound: Inbound,
    started: float,
    render: Any,
    budgets: list[Budget] | None = None,
) -> tuple[dict[str, Any], list[Rendered], str]:
    """One message through the engine, continuing the user's latest conversation, counted
    against `budgets` (default: the channel's own)."""
    if budgets is None:
        budgets = [_channel_budget(config.tenant_id, channel)]
    user_id = await platform.identities.resolve(config.tenant_id, channel, inbound.sender)
    latest = await platform.store.latest_conversation(config.tenant_id, user_id)
    if latest and inbound.type == "text" and NUMBER.match(inbound.text):
        inbound = await _numbered_choice(platform, config.tenant_id, latest, inbound)
    payload = dict(inbound.payload or {})
    payload["provider_message_id"] = inbound.message_id
    if inbound.name:
        payload["sender_name"] = inbound.name
    fields = {
        "user_id": user_id,
        "text": inbound.text.replace("\x00", "")[:8192],
        "channel": channel,
        "type": inbound.type,
        "payload": payload,
    }
    try:
        body = MessageIn.model_validate({**fields, "conversation_id": latest})
    except ValidationError as exc:
        raise ApiError(
            422, f"the message cannot be taken: {exc.errors()[0]['msg']}", code="validation_error"
        ) from None
    try:
        result, rendered = await converse(
            platform, config.key, body, started, render, budgets=budgets
        )
    except ApiError as exc:
        if exc.status != 404 or body.conversation_id is None:
            raise
        # the latest conversation expired meanwhile: a new one starts
        body = body.model_copy(update={"conversation_id": None})
        result, rendered = await converse(
            platform, config.key, body, started, render, budgets=budgets
        )
    await _remember_choices(platform, config.tenant_id, result, rendered)
    return result, rendered, user_id


def _channel_budget(tenant_id: str, channel: str) -> Budget:
    """A channel's webhooks share one budget (twilio-voice counts as twilio)."""
    return Budget(TenantKeyspace(tenant_id).source_rate_limit(f"chan:{config_channel(channel)}"))


def _widget_budgets(tenant_id: str, visitor_id: str, address: str | None) -> list[Budget]:
    keys = TenantKeyspace(tenant_id)
    budgets = [
        _channel_budget(tenant_id, "web"),
        Budget(keys.source_rate_limit(f"web:visitor:{visitor_id}"), WIDGET_VISITOR_PER_MINUTE),
    ]
    if address:
        digest = hashlib.sha256(address.encode()).hexdigest()[:32]
        budgets.append(
            Budget(keys.source_rate_limit(f"web:addr:{digest}"), WIDGET_ADDRESS_PER_MINUTE)
        )
    return budgets


NUMBER = re.compile(r"^\s*(\d{1,2})\s*[.)]?\s*$")
CHOICES = {"quick_replies": "options", "buttons": "buttons", "list": "items"}


async def _remember_choices(
    platform: Platform, tenant_id: str, result: dict[str, Any], rendered: list[Rendered]
) -> None:
    """Choices a channel could only show as a numbered list are kept with the
    conversation, so that a bare number answering them is taken as that choice."""
    offered = None
    for reply, shown in zip(result["replies"], rendered, strict=False):
        kind = reply["type"]
        if kind in CHOICES and shown.degraded and shown.degraded.endswith("->text"):
            offered = [
                {"title": c.get("title"), "payload": c.get("payload")}
                for c in reply["payload"].get(CHOICES[kind], [])
            ]
    if offered is None:
        return
    key = TenantKeyspace(tenant_id).conversation(result["conversation_id"])
    await platform.redis.eval(
        REMEMBER_CHOICES, 1, key, orjson.dumps(offered), platform.store.ttl_seconds
    )


# Atomically, and only into a conversation that still exists: an erasure (or the TTL) may
# have removed it since the turn, and a bare HSET would bring it back, without a TTL.
# The choices are valid while no other message came: the conversation's count must still
# be the one they were offered at.
REMEMBER_CHOICES = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local count = tonumber(redis.call('HGET', KEYS[1], 'message_count') or '0') or 0
redis.call('HSET', KEYS[1], 'choices',
           '{"message_count":' .. string.format('%d', count) .. ',"choices":' .. ARGV[1] .. '}')
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


async def _numbered_choice(
    platform: Platform, tenant_id: str, conversation_id: str, inbound: Inbound
) -> Inbound:
    key = TenantKeyspace(tenant_id).conversation(conversation_id)
    count, raw = await platform.redis.hmget(key, ["message_count", "choices"])
    if not raw:
        return inbound
    kept = orjson.loads(raw)
    number = int(NUMBER.match(inbound.text).group(1))  # type: ignore[union-attr]
    if kept["message_count"] != int(count or 0) or not 1 <= number <= len(kept["choices"]):
        return inbound
    chosen = kept["choices"][number - 1]
    if not chosen.get("payload"):
        return inbound  # a link: nothing to send back
    return replace(
        inbound,
        type="postback",
        text=str(chosen.get("title") or inbound.text),
        payload={**(inbound.payload or {}), "payload": chosen["payload"],
                 "title": chosen.get("title"), "chosen_by_number": number},
    )  # fmt: skip


@asynccontextmanager
async def _once(
    platform: Platform, tenant_id: str, channel: str, message_id: str
) -> AsyncIterator[bool]:
    """Whether a delivery is new. A new one is handled in the block: marked done when the
    block ends, released if it fails (so the provider's retry is handled). One handled
    before is counted and skipped; one being handled gets 503, and the provider comes back."""
    claim = await platform.deliveries.claim(tenant_id, channel, message_id)
    if claim == "busy":
        raise ApiError(
            503,
            "this delivery is being handled; retry shortly",
            code="delivery_in_progress",
            headers={"Retry-After": "2"},
        )
    if claim == "done":
        CHANNEL_DUPLICATES.labels(channel).inc()
        yield False
        return
    try:
        yield True
    except BaseException:
        await platform.deliveries.release(tenant_id, channel, message_id)
        raise
    await platform.deliveries.done(tenant_id, channel, message_id)


async def _handle(
    platform: Platform,
    config: ChannelConfig,
    channel: str,
    inbounds: list[Inbound],
    started: float,
) -> tuple[int, int]:
    """Answer each new message; skip the ones handled before; send the replies. A message
    over the channel's budget is kept in the inbox for the recovery loop. How many were
    answered, and how many kept."""
    answered = deferred = 0
    for inbound in inbounds:
        if inbound.type in RECEIPTS or not inbound.sender or _elsewhere(config, inbound):
            continue
        async with _once(platform, config.tenant_id, channel, inbound.message_id) as new:
            if not new:
                continue
            try:
                await _answer_and_send(platform, config, channel, inbound, started)
            except ApiError as exc:
                if exc.status != 429:
                    raise
                # kept before the delivery is marked done (when the block ends): the
                # provider's retry is skipped from then on, and nothing is lost
                user_id = await platform.identities.resolve(
                    config.tenant_id, channel, inbound.sender
                )
                await platform.deliveries.defer(
                    config.tenant_id, inbound_record(channel, inbound, user_id)
                )
                deferred += 1
                continue
            answered += 1
    return answered, deferred


async def _answer_and_send(
    platform: Platform, config: ChannelConfig, channel: str, inbound: Inbound, started: float
) -> None:
    result, rendered, user_id = await _answer(
        platform, config, channel, inbound, started, _safe(RENDERERS[config_channel(channel)])
    )
    # the replies in the outbox before the delivery is marked done: from then on the
    # provider's retry is skipped
    await platform.sender.dispatch(
        Outgoing(config, channel, inbound.address, rendered, user_id, result["conversation_id"])
    )


async def answer_deferred(platform: Platform) -> int:
    """Answer the channel messages kept over budget, oldest first per tenant, as far as
    the budgets allow now; the rest wait for the next round. How many were answered."""
    answered = 0
    async for tenant_id, entries in platform.deliveries.deferred():
        for entry_id, record in entries:
            if not await platform.deliveries.take_deferred(tenant_id, entry_id):
                break  # another process is answering this tenant's inbox
            try:
                channel, inbound = record["channel"], Inbound(**record["inbound"])
            except (KeyError, TypeError):  # left by another release, or damaged
                # its id only: the record holds the end user's text and address
                log.error("an unreadable deferred channel message dropped: %s", entry_id)
                await platform.deliveries.finish_deferred(tenant_id, entry_id)
                continue
            try:
                config = await platform.channels.config(tenant_id, config_channel(channel))
                if config is None or not config.enabled:
                    log.warning("deferred %s message dropped: channel gone", channel)
                else:
                    await _answer_and_send(platform, config, channel, inbound, time.perf_counter())
                    answered += 1
            except ApiError as exc:
                if exc.status in (409, 429, 503):  # later: over budget, erasing, busy
                    await platform.deliveries.release_deferred(tenant_id, entry_id)
                    break
                log.warning("deferred %s message refused: %s", channel, exc)
            except Exception:
                # a store away, a secret that cannot be opened: this tenant's inbox waits
                # for the next round, and the other tenants' go on
                log.warning("deferred %s message not answered yet", channel, exc_info=True)
                await platform.deliveries.release_deferred(tenant_id, entry_id)
                break
            except BaseException:
                await platform.deliveries.release_deferred(tenant_id, entry_id)
                raise
            await platform.deliveries.finish_deferred(tenant_id, entry_id)
    return answered


def _safe(render: Callable[[dict[str, Any]], Rendered]) -> Callable[[dict[str, Any]], Rendered]:
    """A reply the channel's renderer cannot take (a flow's rich reply missing a field) is
    sent as text rather than failing the message."""

    def rendering(reply: dict[str, Any]) -> Rendered:
        try:
            return render(reply)
        except (KeyError, TypeError, ValueError, AttributeError):
            text = as_text(reply)
            bodies = render({"type": "text", "text": text}).bodies if text else []
            return Rendered(bodies, f"{reply.get('type')}->text")

    return rendering


def _elsewhere(config: ChannelConfig, inbound: Inbound) -> bool:
    """A message to another number or page than the one configured (an app subscribed to
    several sends them all to the same webhook): not this channel's to answer."""
    for name in ("phone_number_id", "page_id"):
        mine, theirs = config.secrets.get(name), inbound.address.get(name)
        if mine and theirs and str(theirs) != mine:
            return True
    return False


async def _voice(
    platform: Platform,
    config: ChannelConfig,
    request: Request,
    form: dict[str, str],
    started: float,
) -> Response:
    """A call: greet and listen; then each speech result is answered aloud."""
    action = _request_url(request)
    if not form.get("SpeechResult"):
        return Response(twilio.twiml(twilio.GREETING, action), media_type="text/xml")
    inbound = twilio.parse_voice(form)
    async with _once(platform, config.tenant_id, "twilio-voice", inbound.message_id) as new:
        if not new:
            return Response(twilio.twiml(None, action), media_type="text/xml")
        _, rendered, _ = await _answer(
            platform, config, "twilio-voice", inbound, started, twilio.render_voice
        )
    spoken = " ".join(str(body) for r in rendered for body in r.bodies)
    return Response(twilio.twiml(spoken, action), media_type="text/xml")


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
        budgets = _widget_budgets(config.tenant_id, message.visitor_id, client_address(request))
        result, _, _ = await _answer(
            platform, config, "web", inbound, started, _safe(web.render), budgets
        )
    except ApiError as exc:
        exc.headers = {**(exc.headers or {}), **_cors(origin)}
        raise
    shown = {k: result[k] for k in ("conversation_id", "message_id", "replies", "handoff")}
    return Response(orjson.dumps(shown), media_type="application/json", headers=_cors(origin))


async def _web_history(request: Request, tenant_id: str, platform: Platform) -> Response:
    config = await _config(platform, "web", tenant_id, client_address(request))
    origin = _widget(config, request)
    visitor = request.query_params.get("visitor_id", "")
    if not web.VISITOR_ID.match(visitor):
        raise ApiError(
            422,
            "visitor_id: 16 to 64 letters, digits, - or _",
            code="validation_error",
            headers=_cors(origin),
        )
    user_id = await platform.identities.resolve(tenant_id, "web", visitor)
    latest = await platform.store.user_conversations(tenant_id, user_id, 1)
    messages: list[dict[str, Any]] = []
    conversation_id = latest[0]["conversation_id"] if latest else None
    found = (
        await platform.store.conversation(tenant_id, conversation_id) if conversation_id else None
    )
    if found is not None:
        for event in found[1]:
            payload = orjson.loads(event["payload"]) if event.get("payload") else None
            messages.append(
                {
                    "direction": event["direction"],
                    "type": event["type"],
                    "text": event["text"],
                    "payload": payload,
                    "message_id": event["event_id"],
                }
            )
    body = {"conversation_id": conversation_id if found else None, "messages": messages}
    return Response(orjson.dumps(body), media_type="application/json", headers=_cors(origin))
