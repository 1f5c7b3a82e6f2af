"""Slack: the Events API (`event_callback`, with `url_verification` answered) and
interactivity (`block_actions`, form-encoded); replies through `chat.postMessage` with
Block Kit, reactions through `reactions.add`.

Natively: text, images, buttons and quick replies (an actions block), lists (a static
select), carousels (a section per card, with its image and buttons), reactions. Files,
audio and video become links; a sticker an image; a location, a contact and a template
text. Slack has no typing indicator for bots: nothing is sent.
"""

from __future__ import annotations

from typing import Any

import httpx

from realtime.channels.base import (
    DELIVERED,
    Call,
    Outcome,
    PayloadError,
    clip,
    http_outcome,
    json_body,
    media_type,
)
from realtime.channels.config import ChannelConfig
from realtime.channels.model import Inbound
from realtime.engine.replies import Rendered, as_text

DEFAULT_API = "https://slack.com"
EMOJI_NAMES = {
    "👍": "+1",
    "👎": "-1",
    "❤️": "heart",
    "😂": "joy",
    "🎉": "tada",
    "👀": "eyes",
    "✅": "white_check_mark",
    "🙏": "pray",
    "😀": "grinning",
}
# chat.postMessage errors worth another try; every other `ok: false` is final
RETRY_ERRORS = {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}


def parse_event(event: dict[str, Any]) -> list[Inbound]:
    """An Events API callback (`url_verification` is answered before this)."""
    if event.get("type") != "event_callback":
        raise PayloadError(f"not an event callback: {event.get('type')!r}")
    inner = event.get("event") or {}
    event_id = str(event.get("event_id") or "")
    if not event_id:
        raise PayloadError("an event callback without event_id")
    kind = inner.get("type")
    if kind in ("message", "app_mention"):
        if inner.get("bot_id") or inner.get("subtype") not in (None, "file_share"):
            return []  # the bot's own messages, edits, joins, …
        # keyed by the message, not the event: one message can come as both a `message`
        # and an `app_mention` event
        key = f"msg:{inner['channel']}:{inner['ts']}" if inner.get("ts") else event_id
        inbound = Inbound(str(inner.get("user", "")), key, "text", str(inner.get("text") or ""))
        files = inner.get("files") or []
        if files:
            inbound.type = media_type(files[0].get("mimetype"))
            inbound.payload = {
                "url": files[0].get("url_private"),
                "name": files[0].get("name"),
                "mimetype": files[0].get("mimetype"),
                "files": len(files),
            }
        inbound.address = {
            "channel": inner.get("channel"),
            "thread_ts": inner.get("thread_ts"),
            "ts": inner.get("ts"),
        }
        return [inbound]
    if kind == "reaction_added":
        item = inner.get("item") or {}
        return [
            Inbound(
                str(inner.get("user", "")),
                event_id,
                "reaction",
                str(inner.get("reaction", "")),
                {"emoji": inner.get("reaction"), "message_id": item.get("ts")},
                address={"channel": item.get("channel")},
            )
        ]
    return []


def parse_interaction(payload: dict[str, Any]) -> list[Inbound]:
    """A `block_actions` interaction: the user pressed a button or chose a list row."""
    if payload.get("type") != "block_actions":
        return []
    user = str((payload.get("user") or {}).get("id", ""))
    channel = (payload.get("channel") or {}).get("id") or (payload.get("container") or {}).get(
        "channel_id"
    )
    found = []
    for action in payload.get("actions") or []:
        chosen = action.get("selected_option") or action
        title = ((chosen.get("text") or {}).get("text")) or ""
        value = chosen.get("value")
        found.append(
            Inbound(
                user,
                f"action:{action.get('action_ts')}:{action.get('action_id')}",
                "postback",
                str(title),
                {"payload": value, "title": title},
                address={"channel": channel},
            )
        )
    return found


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _buttons(choices: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    elements = []
    for i, choice in enumerate(choices[:25]):
        button: dict[str, Any] = {
            "type": "button",
            "action_id": f"{prefix}_{i}",
            "text": {"type": "plain_text", "text": choice["title"][:75]},
        }
        if choice.get("url"):
            button["url"] = choice["url"]
        else:
            button["value"] = str(choice.get("payload") or choice["title"])[:2000]
        elements.append(button)
    return {"type": "actions", "elements": elements}


def render(reply: dict[str, Any]) -> Rendered:
    kind = reply.get("type", "text")
    text = str(reply.get("text") or "")
    fallback = as_text(reply)
    blocks: list[dict[str, Any]] | None = None
    degraded: str | None = None
    match kind:
        case "text":
            return Rendered([{"text": clip(text, 40_000)}])
        case "image" | "sticker":
            blocks = [{"type": "image", "image_url": reply["url"], "alt_text": text or kind}]
            degraded = "sticker->image" if kind == "sticker" else None
        case "quick_replies" | "buttons":
            choices = reply.get("options" if kind == "quick_replies" else "buttons", [])
            blocks = [_section(text or "Choose one"), _buttons(choices, "choice")]
            degraded = "quick_replies->buttons" if kind == "quick_replies" else None
        case "list":
            options = [
                {
                    "text": {"type": "plain_text", "text": item["title"][:75]},
                    "value": str(item.get("payload") or item["title"])[:150],
                }
                for item in reply.get("items", [])[:100]
            ]
            select = {
                "type": "static_select",
                "action_id": "list",
                "placeholder": {"type": "plain_text", "text": str(reply.get("button") or "Choose")},
                "options": options,
            }
            blocks = [{**_section(text or "Choose one"), "accessory": select}]
        case "carousel":
            blocks = []
            if text:
                blocks.append(_section(text))
            for i, card in enumerate(reply.get("cards", [])[:10]):
                section = _section(
                    f"*{card['title']}*" + (f"\n{card['subtitle']}" if card.get("subtitle") else "")
                )
                if card.get("image_url"):
                    section["accessory"] = {
                        "type": "image",
                        "image_url": card["image_url"],
                        "alt_text": card["title"],
                    }
                blocks.append(section)
                if card.get("buttons"):
                    blocks.append(_buttons(card["buttons"], f"card{i}"))
        case "reaction":
            name = EMOJI_NAMES.get(reply["emoji"], reply["emoji"].strip(":"))
            return Rendered(
                [{"method": "reactions.add", "name": name, "timestamp": reply["message_id"]}]
            )
        case "typing":
            return Rendered([], degraded="typing->none")
    if blocks is None:
        return Rendered([{"text": fallback}], degraded=f"{kind}->text")
    return Rendered([{"text": fallback, "blocks": blocks}], degraded=degraded)


def call(config: ChannelConfig, address: dict[str, Any], body: dict[str, Any]) -> Call:
    base = (config.api_base_url or DEFAULT_API).rstrip("/")
    payload = {k: v for k, v in body.items() if k != "method"}
    payload["channel"] = address["channel"]
    if address.get("thread_ts"):
        payload.setdefault("thread_ts", address["thread_ts"])
    return Call(
        "POST",
        f"{base}/api/{body.get('method', 'chat.postMessage')}",
        headers={"Authorization": f"Bearer {config.secrets.get('bot_token', '')}"},
        json=payload,
    )


def outcome(response: httpx.Response) -> Outcome:
    """Slack answers 200 with `{"ok": false, "error": …}` for most failures, 429 with
    Retry-After when rate-limited."""
    body = json_body(response)
    if response.is_success and body.get("ok"):
        return DELIVERED
    error = body.get("error") or f"HTTP {response.status_code}"
    result = http_outcome(response, f"slack error: {error}")
    if error in RETRY_ERRORS and not result.retry:
        return Outcome(False, retry=True, error=f"slack error: {error}")
    return result
