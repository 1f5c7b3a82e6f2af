"""Channel dispatch: a channel's webhook, verified before anything else reads it, its
messages answered through the engine's turn, and the replies handed to the channel's
outbox. realtime/api/routes/channels.py is the HTTP layer in front of it.

A webhook's messages go through the same path as `POST /v1/messages` (realtime/messages.py,
with the channel's own API key: admitted, rate-limited, answered, streamed into the lake
with their channel); the replies are rendered for the channel and sent through its API
after the webhook is answered (delivery.py). A refused webhook changes nothing and is
counted on /metrics (`chatlake_channel_webhooks_refused_total`).

One source of messages must not starve another: each channel's webhooks have a rate-limit
budget of their own, and the web widget (whose key is public) is limited per channel,
per visitor and per client address. A provider's message over its channel's budget is
acknowledged (providers such as Twilio do not retry) and kept in the tenant's channel
inbox; the recovery loop answers it once the budget allows (`answer_deferred`). A webhook
URL naming a tenant that does not exist is answered from Redis (realtime/gate.py),
without PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

import orjson
from pydantic import ValidationError

from chatlake.keyspace import TenantKeyspace
from chatlake.secrets import SecretError
from realtime.api.errors import ApiError
from realtime.api.schemas import MessageIn
from realtime.auth import too_many_failures
from realtime.channels import messenger, signatures, slack, teams, twilio, web, whatsapp
from realtime.channels.base import PayloadError
from realtime.channels.config import SECRETS, WEBHOOK_CHANNELS, ChannelConfig, config_channel
from realtime.channels.delivery import Outgoing, inbound_record
from realtime.channels.model import Inbound
from realtime.engine.replies import Render, Rendered, as_text
from realtime.messages import converse
from realtime.observability import CHANNEL_DUPLICATES, CHANNEL_REFUSED
from realtime.outbound import url_problem
from realtime.platform import Platform
from realtime.state import Budget

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Webhook:
    """A webhook request as the provider sent it."""

    raw: bytes  # the body, exactly as signed
    headers: Mapping[str, str]  # looked up by lower-case name
    url: str  # as the provider requested it (behind a proxy: X-Forwarded-Proto/Host)


@dataclass(frozen=True)
class WebhookReply:
    """What the webhook's response carries: the counts, TwiML, or Slack's challenge."""

    body: bytes | str
    media_type: str


def _refused(channel: str, reason: str, status: int, message: str) -> ApiError:
    CHANNEL_REFUSED.labels(channel, reason).inc()
    return ApiError(status, message, code=f"channel_{reason}")


async def channel_config(
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


def handshake(config: ChannelConfig, channel: str, params: Mapping[str, str]) -> str:
    """Meta's verify handshake (WhatsApp, Messenger): the challenge to send back."""
    if channel not in ("whatsapp", "messenger"):
        raise ApiError(405, f"the {channel} webhook takes POST only", code="method_not_allowed")
    expected = config.secrets.get("verify_token", "")
    given = params.get("hub.verify_token", "")
    if (
        params.get("hub.mode") != "subscribe"
        or not expected
        or not signatures.constant_time_equal(expected, given)
    ):
        raise _refused(channel, "signature", 403, "hub.verify_token does not match")
    return params.get("hub.challenge", "")


async def receive(
    platform: Platform, config: ChannelConfig, channel: str, webhook: Webhook, started: float
) -> WebhookReply:
    """A provider's webhook (the web widget has its own calls below): verified, then each
    message answered through the engine, or kept for later when over the channel's
    budget; the replies go to the channel's outbox."""
    raw, headers = webhook.raw, webhook.headers
    match channel:
        case "whatsapp" | "messenger":
            try:
                signatures.verify_meta(
                    config.secrets.get("app_secret"),
                    raw,
                    headers.get("x-hub-signature-256"),
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
                    headers.get("x-slack-request-timestamp"),
                    headers.get("x-slack-signature"),
                )
            except signatures.SignatureError as exc:
                raise _signature_refused(channel, exc) from None
            if headers.get("content-type", "").startswith("application/x-www-form"):
                form = dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))
                payload = _json(channel, form.get("payload", "").encode())
                inbounds = _parsed(channel, lambda: slack.parse_interaction(payload))
            else:
                event = _json(channel, raw)
                if isinstance(event, dict) and event.get("type") == "url_verification":
                    return WebhookReply(
                        orjson.dumps({"challenge": event.get("challenge", "")}),
                        "application/json",
                    )
                inbounds = _parsed(channel, lambda: slack.parse_event(event))
        case "teams":
            activity = _json(channel, raw)
            if not isinstance(activity, dict):
                raise ApiError(400, "an activity is a JSON object", code="malformed")
            try:
                await teams.verify(
                    platform.teams_keys, config, headers.get("authorization"), activity
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
                    webhook.url,
                    params,
                    headers.get("x-twilio-signature"),
                )
            except signatures.SignatureError as exc:
                raise _signature_refused(channel, exc) from None
            if channel == "twilio-voice":
                return await _voice(platform, config, webhook.url, dict(params), started)
            inbounds = _parsed(channel, lambda: twilio.parse_sms(dict(params)))
            await _handle(platform, config, channel, inbounds, started)  # answered or kept
            return WebhookReply(twilio.EMPTY_TWIML, "text/xml")
        case _:  # the web widget's messages: answer_widget
            raise ValueError(f"{channel}: not a provider's webhook")
    handled, deferred = await _handle(platform, config, channel, inbounds, started)
    body: dict[str, Any] = {"received": len(inbounds), "answered": handled}
    if deferred:
        body["deferred"] = deferred  # over the channel's budget: answered a little later
    return WebhookReply(orjson.dumps(body), "application/json")


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
    render: Render,
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


def _safe(render: Render) -> Render:
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
    action: str,
    form: dict[str, str],
    started: float,
) -> WebhookReply:
    """A call: greet and listen; then each speech result is answered aloud (TwiML that
    posts the next speech result back to `action`, the webhook's own URL)."""
    if not form.get("SpeechResult"):
        return WebhookReply(twilio.twiml(twilio.GREETING, action), "text/xml")
    inbound = twilio.parse_voice(form)
    async with _once(platform, config.tenant_id, "twilio-voice", inbound.message_id) as new:
        if not new:
            return WebhookReply(twilio.twiml(None, action), "text/xml")
        _, rendered, _ = await _answer(
            platform, config, "twilio-voice", inbound, started, twilio.render_voice
        )
    spoken = " ".join(str(body) for r in rendered for body in r.bodies)
    return WebhookReply(twilio.twiml(spoken, action), "text/xml")


# The web widget (its origin and key are checked by the routes, which answer it directly)


async def answer_widget(
    platform: Platform,
    config: ChannelConfig,
    inbound: Inbound,
    address: str | None,
    started: float,
) -> dict[str, Any]:
    """A widget visitor's message (`inbound.sender`: the visitor id) answered, within the
    web channel's budget, the visitor's and the client `address`'s: the API's answer."""
    budgets = _widget_budgets(config.tenant_id, inbound.sender, address)
    result, _, _ = await _answer(
        platform, config, "web", inbound, started, _safe(web.render), budgets
    )
    return result


async def widget_history(platform: Platform, tenant_id: str, visitor_id: str) -> dict[str, Any]:
    """The visitor's latest conversation and its messages (none when it expired)."""
    user_id = await platform.identities.resolve(tenant_id, "web", visitor_id)
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
    return {"conversation_id": conversation_id if found else None, "messages": messages}
