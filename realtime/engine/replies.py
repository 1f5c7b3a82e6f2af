"""The bot's replies: what the engine answers with, and what a channel renders them into.

A reply is a plain text, or a rich reply (a flow's `say` object) of one of `REPLY_TYPES`,
shaped as `REPLY_FIELDS` says; `validate_reply` checks a flow's rich replies when the flow
is published. The conversation turn (`turn.py`) records every reply with its text form
(`as_text`: a carousel becomes numbered text, buttons a numbered list): the text the API
returns and the lake keeps.

A channel renders each reply into its own format (`Render`, returning `Rendered`): what
it can show natively, and the rest degraded and named, so that the turn records the
degradation on the reply's event. The channel modules import this model; the engine
imports nothing of theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# what both ends may send: a text, media, a place, a person
COMMON_TYPES = ("text", "image", "file", "audio", "video", "location", "contact", "sticker")
REPLY_TYPES = (
    *COMMON_TYPES,
    "quick_replies",
    "buttons",
    "carousel",
    "list",
    "template",
    "reaction",
    "typing",
)

# What a rich reply carries besides `type` (and an optional `text`: a caption, a prompt).
REPLY_FIELDS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "image": ("url",),
    "file": ("url",),  # and `filename`
    "audio": ("url",),
    "video": ("url",),
    "sticker": ("url",),
    "location": ("latitude", "longitude"),  # and `name`, `address`
    "contact": ("name",),  # and `phone`, `email`
    "quick_replies": ("text", "options"),  # options: [{title, payload}]
    "buttons": ("text", "buttons"),  # buttons: [{title, payload} | {title, url}]
    "carousel": ("cards",),  # cards: [{title, subtitle?, image_url?, buttons?}]
    "list": ("text", "items"),  # items: [{title, payload, description?}]; `button` label
    "template": ("name",),  # a pre-approved template: `language`, `parameters`, `text`
    "reaction": ("emoji", "message_id"),
    "typing": (),
}


@dataclass
class Rendered:
    """A reply in a channel's format: one body per request to the channel's send API (or
    markup, for the channels answered in the webhook's own response)."""

    bodies: list[Any]
    degraded: str | None = None  # e.g. "carousel->text": recorded on the reply's event


Render = Callable[[dict[str, Any]], Rendered]  # a channel's renderer of one rich reply


def reply_item(value: str | dict[str, Any]) -> dict[str, Any]:
    """A reply as a rich reply: plain texts become `{type: text, text}`."""
    return {"type": "text", "text": value} if isinstance(value, str) else value


def _numbered(entries: list[str]) -> str:
    return "\n".join(f"{i}. {entry}" for i, entry in enumerate(entries, 1))


def _choice(option: dict[str, Any]) -> str:
    title = str(option.get("title", ""))
    return f"{title}: {option['url']}" if option.get("url") else title


def as_text(reply: dict[str, Any]) -> str:
    """The reply as plain text: what a text-only channel sends, and the text the lake keeps."""
    kind = reply.get("type", "text")
    text = str(reply.get("text") or "")
    if kind == "text":  # every plain reply, on the hot path
        return text
    lines: list[str] = [text] if text else []
    match kind:
        case "quick_replies":
            lines.append(_numbered([_choice(o) for o in reply.get("options", [])]))
        case "buttons":
            lines.append(_numbered([_choice(b) for b in reply.get("buttons", [])]))
        case "list":
            lines.append(
                _numbered(
                    [
                        str(item.get("title", ""))
                        + (f" ({item['description']})" if item.get("description") else "")
                        for item in reply.get("items", [])
                    ]
                )
            )
        case "carousel":
            cards = []
            for card in reply.get("cards", []):
                entry = str(card.get("title", ""))
                if card.get("subtitle"):
                    entry += f" - {card['subtitle']}"
                if card.get("image_url"):
                    entry += f"\n   {card['image_url']}"
                for button in card.get("buttons", []):
                    entry += f"\n   * {_choice(button)}"
                cards.append(entry)
            lines.append(_numbered(cards))
        case "image" | "file" | "audio" | "video" | "sticker":
            label = reply.get("filename") if kind == "file" else None
            url = str(reply.get("url", ""))
            lines.append(f"{label}: {url}" if label else url)
        case "location":
            place = ", ".join(str(reply[k]) for k in ("name", "address") if reply.get(k))
            where = f"https://maps.google.com/?q={reply.get('latitude')},{reply.get('longitude')}"
            lines.append(f"{place} {where}".strip())
        case "contact":
            lines.append(
                ", ".join(str(reply[k]) for k in ("name", "phone", "email") if reply.get(k))
            )
        case "template":
            if not text:
                params = ", ".join(str(p) for p in reply.get("parameters", []))
                name = str(reply.get("name", ""))
                lines.append(f"{name}: {params}" if params else name)
        case "reaction":
            lines = [str(reply.get("emoji", ""))]
        case "typing":
            lines = []
    return "\n".join(line for line in lines if line)


def validate_reply(reply: dict[str, Any]) -> str | None:
    """Why a rich reply cannot be rendered (a flow's `say` object), or None."""
    kind = reply.get("type")
    if kind not in REPLY_FIELDS:
        return f"unknown reply type {kind!r}: one of {', '.join(REPLY_TYPES)}"
    missing = [name for name in REPLY_FIELDS[kind] if reply.get(name) in (None, "", [])]
    if missing:
        return f"a {kind} reply needs {', '.join(missing)}"
    return None
