"""WhatsApp Cloud API (Meta): webhooks of `whatsapp_business_account` changes, replies
through `POST /{version}/{phone_number_id}/messages`.

Natively: text, media (image, document, audio, video, sticker), location, contacts,
reply buttons (at most 3), lists (at most 10 rows), templates, reactions and the typing
indicator. Quick replies become reply buttons; a carousel, and buttons that open URLs or
are more than 3, become numbered text.
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
)
from realtime.channels.config import ChannelConfig
from realtime.channels.model import Inbound
from realtime.engine.replies import Rendered, as_text

DEFAULT_API = "https://graph.facebook.com"
GRAPH_VERSION = "v21.0"
# Meta's throttling and temporary codes, retried: Graph API rate limits (4 app, 17 user,
# 32 page, 613 call rate), 1 and 2 (temporary), WhatsApp's 80007, 130429 (throughput),
# 131000 and 131016 (service), 131048 (spam rate limit), 131056 (pair rate limit)
RETRY_CODES = {1, 2, 4, 17, 32, 613, 80007, 130429, 131000, 131016, 131048, 131056}
MEDIA = {
    "image": "image",
    "document": "file",
    "audio": "audio",
    "video": "video",
    "sticker": "sticker",
}


def parse(event: dict[str, Any]) -> list[Inbound]:
    if event.get("object") != "whatsapp_business_account":
        raise PayloadError("not a WhatsApp Business Account webhook")
    found: list[Inbound] = []
    for entry in event.get("entry") or []:
        for change in entry.get("changes") or []:
            value = change.get("value") or {}
            phone_number_id = (value.get("metadata") or {}).get("phone_number_id")
            names = {
                c.get("wa_id"): (c.get("profile") or {}).get("name")
                for c in value.get("contacts") or []
            }
            for message in value.get("messages") or []:
                inbound = _message(message)
                if inbound is None:
                    continue
                inbound.address = {
                    "to": inbound.sender,
                    "phone_number_id": phone_number_id,
                    "message_id": message["id"],
                }
                inbound.name = names.get(inbound.sender)
                found.append(inbound)
            for status in value.get("statuses") or []:
                found.append(
                    Inbound(
                        sender=str(status.get("recipient_id", "")),
                        message_id=f"status:{status.get('id')}:{status.get('status')}",
                        type="status",
                        payload={
                            "status": status.get("status"),
                            "of": status.get("id"),
                            "errors": status.get("errors"),
                        },
                    )
                )
    return found


def _message(message: dict[str, Any]) -> Inbound | None:
    try:
        sender, message_id, kind = str(message["from"]), str(message["id"]), message["type"]
    except KeyError as exc:
        raise PayloadError(f"a message without {exc.args[0]}") from None
    if not sender or not message_id:
        raise PayloadError("a message without its sender or id")
    body = message.get(kind) or {}
    inbound = Inbound(sender=sender, message_id=message_id, type="text")
    match kind:
        case "text":
            inbound.text = str(body.get("body", ""))
        case kind if kind in MEDIA:
            inbound.type = MEDIA[kind]
            inbound.text = str(body.get("caption", ""))
            inbound.payload = {
                k: body[k] for k in ("id", "mime_type", "filename", "sha256") if k in body
            }
        case "location":
            inbound.type = "location"
            inbound.payload = {k: body.get(k) for k in ("latitude", "longitude", "name", "address")}
            inbound.text = str(body.get("name") or "")
        case "contacts":
            inbound.type = "contact"
            people = message.get("contacts") or []
            inbound.payload = {"contacts": people}
            inbound.text = ", ".join(
                str((p.get("name") or {}).get("formatted_name", "")) for p in people
            )
        case "interactive":
            reply = body.get(body.get("type", ""), {})
            inbound.type = "postback"
            inbound.text = str(reply.get("title", ""))
            inbound.payload = {"payload": reply.get("id"), "title": reply.get("title")}
        case "button":  # a template's quick-reply button
            inbound.type = "quick_reply"
            inbound.text = str(body.get("text", ""))
            inbound.payload = {"payload": body.get("payload"), "title": body.get("text")}
        case "reaction":
            inbound.type = "reaction"
            inbound.text = str(body.get("emoji") or "")
            inbound.payload = {"message_id": body.get("message_id"), "emoji": body.get("emoji")}
        case _:
            return None  # "unsupported", "system", …: nothing a user said
    return inbound


def _choices_as_buttons(text: str, choices: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not 0 < len(choices) <= 3 or any(c.get("url") for c in choices):
        return None
    buttons = [
        {
            "type": "reply",
            "reply": {"id": str(c.get("payload") or c["title"])[:256], "title": c["title"][:20]},
        }
        for c in choices
    ]
    body = {
        "type": "button",
        "body": {"text": clip(text or "Choose one", 1024)},
        "action": {"buttons": buttons},
    }
    return {"type": "interactive", "interactive": body}


def render(reply: dict[str, Any]) -> Rendered:
    kind = reply.get("type", "text")
    text = str(reply.get("text") or "")
    native: dict[str, Any] | None = None
    degraded_to = "text"
    match kind:
        case "text":
            native = {"type": "text", "text": {"body": clip(text, 4096), "preview_url": False}}
        case "image" | "video" | "sticker" | "audio" | "file":
            wa = "document" if kind == "file" else kind
            media: dict[str, Any] = {"link": reply["url"]}
            if text and kind in ("image", "video", "file"):
                media["caption"] = clip(text, 1024)
            if kind == "file" and reply.get("filename"):
                media["filename"] = reply["filename"]
            native = {"type": wa, wa: media}
        case "location":
            native = {
                "type": "location",
                "location": {
                    k: reply.get(k)
                    for k in ("latitude", "longitude", "name", "address")
                    if reply.get(k) is not None
                },
            }
        case "contact":
            person: dict[str, Any] = {
                "name": {"formatted_name": reply["name"], "first_name": reply["name"]}
            }
            if reply.get("phone"):
                person["phones"] = [{"phone": reply["phone"], "type": "CELL"}]
            if reply.get("email"):
                person["emails"] = [{"email": reply["email"], "type": "WORK"}]
            native = {"type": "contacts", "contacts": [person]}
        case "buttons" | "quick_replies":
            choices = reply.get("buttons" if kind == "buttons" else "options", [])
            native = _choices_as_buttons(text, choices)
            if native is None and not any(c.get("url") for c in choices):
                native = _list(text, "Choose", choices)
                degraded_to = "list"
            elif kind == "quick_replies" and native is not None:
                degraded_to = "buttons"
        case "list":
            native = _list(text, str(reply.get("button") or "Choose"), reply.get("items", []))
        case "template":
            template: dict[str, Any] = {
                "name": reply["name"],
                "language": {"code": reply.get("language", "en_US")},
            }
            if reply.get("parameters"):
                template["components"] = [
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": str(p)} for p in reply["parameters"]
                        ],
                    }
                ]
            native = {"type": "template", "template": template}
        case "reaction":
            native = {
                "type": "reaction",
                "reaction": {"message_id": reply["message_id"], "emoji": reply["emoji"]},
            }
        case "typing":
            return Rendered([{"status": "read", "typing_indicator": {"type": "text"}}])
    if native is None:
        fallback = as_text(reply)
        body = {"type": "text", "text": {"body": clip(fallback, 4096), "preview_url": False}}
        return Rendered([body], degraded=f"{kind}->text")
    degraded = f"{kind}->{degraded_to}" if degraded_to != "text" else None
    return Rendered([native], degraded=degraded)


def _list(text: str, button: str, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not 0 < len(items) <= 10 or any(i.get("url") for i in items):
        return None
    rows = []
    for item in items:
        row = {"id": str(item.get("payload") or item["title"])[:200], "title": item["title"][:24]}
        if item.get("description"):
            row["description"] = str(item["description"])[:72]
        rows.append(row)
    body = {
        "type": "list",
        "body": {"text": clip(text or "Choose one", 1024)},
        "action": {"button": button[:20], "sections": [{"title": "Options", "rows": rows}]},
    }
    return {"type": "interactive", "interactive": body}


def call(config: ChannelConfig, address: dict[str, Any], body: dict[str, Any]) -> Call:
    base = (config.api_base_url or DEFAULT_API).rstrip("/")
    phone_number_id = config.secrets.get("phone_number_id") or address.get("phone_number_id")
    payload: dict[str, Any] = {"messaging_product": "whatsapp", **body}
    if body.get("status") == "read":  # the typing indicator rides on a read receipt
        payload["message_id"] = address.get("message_id")
    else:
        payload.update({"recipient_type": "individual", "to": address["to"]})
    return Call(
        "POST",
        f"{base}/{GRAPH_VERSION}/{phone_number_id}/messages",
        headers={"Authorization": f"Bearer {config.secrets.get('access_token', '')}"},
        json=payload,
    )


def outcome(response: httpx.Response) -> Outcome:
    return meta_outcome(response)


def meta_outcome(response: httpx.Response) -> Outcome:
    """Graph API errors: `{"error": {"message", "type", "code", "fbtrace_id"}}`; throttling
    and temporary codes are retried whatever the HTTP status."""
    if response.is_success:
        return DELIVERED
    error = json_body(response).get("error") or {}
    code = error.get("code")
    detail = f"HTTP {response.status_code} code {code}: {str(error.get('message', ''))[:300]}"
    result = http_outcome(response, detail)
    if code in RETRY_CODES and not result.retry:
        return Outcome(False, retry=True, error=detail)
    return result
