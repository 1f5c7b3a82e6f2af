"""Facebook Messenger (Meta): `page` webhooks, replies through the Send API
(`POST /{version}/me/messages`).

Natively: text, media (image, audio, video, file), quick replies (at most 13), buttons
(the button template, at most 3), carousels (the generic template, at most 10 cards),
reactions and typing. A list becomes quick replies, a sticker an image; a location, a
contact and a template become text.
"""

from __future__ import annotations

from typing import Any

import httpx

from realtime.channels.base import Call, Outcome, PayloadError, clip
from realtime.channels.config import ChannelConfig
from realtime.channels.model import Inbound
from realtime.channels.whatsapp import GRAPH_VERSION, meta_outcome
from realtime.engine.replies import Rendered, as_text

DEFAULT_API = "https://graph.facebook.com"


def parse(event: dict[str, Any]) -> list[Inbound]:
    if event.get("object") != "page":
        raise PayloadError("not a Messenger (page) webhook")
    found: list[Inbound] = []
    for entry in event.get("entry") or []:
        for item in entry.get("messaging") or []:
            sender = str((item.get("sender") or {}).get("id", ""))
            page = str((item.get("recipient") or {}).get("id", ""))
            inbound = _item(item, sender)
            if inbound is not None:
                inbound.address = {"psid": sender, "page_id": page}
                found.append(inbound)
    return found


def _item(item: dict[str, Any], sender: str) -> Inbound | None:
    if not sender:
        raise PayloadError("a messaging item without a sender")
    if "message" in item:
        message = item["message"]
        if message.get("is_echo"):
            return None  # the page's own message, echoed back
        if not message.get("mid"):
            raise PayloadError("a message without its mid")
        inbound = Inbound(sender, str(message["mid"]), "text", str(message.get("text") or ""))
        if message.get("quick_reply"):
            inbound.type = "quick_reply"
            inbound.payload = {
                "payload": message["quick_reply"].get("payload"),
                "title": inbound.text,
            }
        elif message.get("attachments"):
            attachment = message["attachments"][0]
            kind, payload = attachment.get("type"), attachment.get("payload") or {}
            if message.get("sticker_id") or payload.get("sticker_id"):
                inbound.type = "sticker"
                inbound.payload = {
                    "url": payload.get("url"),
                    "sticker_id": message.get("sticker_id") or payload.get("sticker_id"),
                }
            elif kind == "location":
                coordinates = payload.get("coordinates") or {}
                inbound.type = "location"
                inbound.payload = {
                    "latitude": coordinates.get("lat"),
                    "longitude": coordinates.get("long"),
                }
            elif kind in ("image", "audio", "video", "file"):
                inbound.type = kind
                inbound.payload = {
                    "url": payload.get("url"),
                    "attachments": len(message["attachments"]),
                }
            else:  # "fallback" (a shared link), "template", …
                inbound.payload = {"attachment": attachment}
        return inbound
    if "postback" in item:
        postback = item["postback"]
        message_id = postback.get("mid") or f"postback:{sender}:{item.get('timestamp')}"
        return Inbound(
            sender,
            str(message_id),
            "postback",
            str(postback.get("title") or ""),
            {"payload": postback.get("payload"), "title": postback.get("title")},
        )
    if "reaction" in item:
        reaction = item["reaction"]
        return Inbound(
            sender,
            f"reaction:{reaction.get('mid')}:{reaction.get('action')}",
            "reaction",
            str(reaction.get("emoji") or ""),
            {
                "message_id": reaction.get("mid"),
                "emoji": reaction.get("emoji"),
                "action": reaction.get("action"),
            },
        )
    for receipt in ("delivery", "read"):
        if receipt in item:
            watermark = item[receipt].get("watermark")
            status = "delivered" if receipt == "delivery" else "read"
            return Inbound(
                sender,
                f"{receipt}:{sender}:{watermark}",
                "status",
                "",
                {"status": status, "watermark": watermark, "of": item[receipt].get("mids")},
            )
    return None  # optins, referrals, …: nothing a user said


def _button(choice: dict[str, Any]) -> dict[str, Any]:
    if choice.get("url"):
        return {"type": "web_url", "url": choice["url"], "title": choice["title"][:20]}
    return {
        "type": "postback",
        "title": choice["title"][:20],
        "payload": str(choice.get("payload") or choice["title"]),
    }


def _quick_replies(text: str, choices: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not 0 < len(choices) <= 13 or any(c.get("url") for c in choices):
        return None
    return {
        "text": clip(text or "Choose one", 2000),
        "quick_replies": [
            {
                "content_type": "text",
                "title": c["title"][:20],
                "payload": str(c.get("payload") or c["title"]),
            }
            for c in choices
        ],
    }


def render(reply: dict[str, Any]) -> Rendered:
    kind = reply.get("type", "text")
    text = str(reply.get("text") or "")
    message: dict[str, Any] | None = None
    degraded_to = "text"
    match kind:
        case "text":
            message = {"text": clip(text, 2000)}
        case "image" | "audio" | "video" | "file" | "sticker":
            fb = "image" if kind == "sticker" else kind
            message = {
                "attachment": {"type": fb, "payload": {"url": reply["url"], "is_reusable": True}}
            }
            degraded_to = "image" if kind == "sticker" else "text"
        case "quick_replies":
            message = _quick_replies(text, reply.get("options", []))
        case "buttons":
            buttons = reply.get("buttons", [])
            if 0 < len(buttons) <= 3:
                message = {
                    "attachment": {
                        "type": "template",
                        "payload": {
                            "template_type": "button",
                            "text": clip(text or "Choose one", 640),
                            "buttons": [_button(b) for b in buttons],
                        },
                    }
                }
            else:
                message = _quick_replies(text, buttons)
                degraded_to = "quick_replies"
        case "carousel":
            cards = reply.get("cards", [])
            if 0 < len(cards) <= 10:
                elements = []
                for card in cards:
                    element: dict[str, Any] = {"title": card["title"][:80]}
                    if card.get("subtitle"):
                        element["subtitle"] = str(card["subtitle"])[:80]
                    if card.get("image_url"):
                        element["image_url"] = card["image_url"]
                    if card.get("buttons"):
                        element["buttons"] = [_button(b) for b in card["buttons"][:3]]
                    elements.append(element)
                message = {
                    "attachment": {
                        "type": "template",
                        "payload": {"template_type": "generic", "elements": elements},
                    }
                }
        case "list":
            message = _quick_replies(text, reply.get("items", []))
            degraded_to = "quick_replies"
        case "reaction":
            return Rendered(
                [
                    {
                        "sender_action": "react",
                        "payload": {"message_id": reply["message_id"], "reaction": reply["emoji"]},
                    }
                ]
            )
        case "typing":
            return Rendered([{"sender_action": "typing_on"}])
    if message is None:
        text = clip(as_text(reply), 2000)
        return Rendered([{"message": {"text": text}}], degraded=f"{kind}->text")
    degraded = f"{kind}->{degraded_to}" if degraded_to != "text" else None
    return Rendered([{"message": message}], degraded=degraded)


def call(config: ChannelConfig, address: dict[str, Any], body: dict[str, Any]) -> Call:
    base = (config.api_base_url or DEFAULT_API).rstrip("/")
    payload = {"recipient": {"id": address["psid"]}, **body}
    if "message" in body:
        payload["messaging_type"] = "RESPONSE"
    return Call(
        "POST",
        f"{base}/{GRAPH_VERSION}/me/messages",
        headers={"Authorization": f"Bearer {config.secrets.get('access_token', '')}"},
        json=payload,
    )


def outcome(response: httpx.Response) -> Outcome:
    return meta_outcome(response)
