"""Twilio: SMS/MMS webhooks (form-encoded), replies through the Messages API
(`POST /2010-04-01/Accounts/{sid}/Messages.json`); voice calls answered with TwiML.

SMS carries text and media (MMS): everything else becomes numbered text (buttons and
quick replies a numbered list, a carousel numbered cards). A call is answered with
`<Gather input="speech">`; the speech-recognition result is the user's text and the reply
is spoken (`<Say>`) before listening again.
"""

from __future__ import annotations

import hashlib
from typing import Any
from xml.sax.saxutils import escape, quoteattr

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
from realtime.channels.model import Inbound, text_only
from realtime.engine.replies import Rendered, as_text

DEFAULT_API = "https://api.twilio.com"
RETRY_CODES = {20429, 20500, 20503, 30001}  # too many requests, internal error, queue overflow
SMS_LIMIT = 1600  # characters of one message's Body (Twilio splits it into segments)
NO_ANSWER = "Sorry, I did not hear anything. Goodbye."
GREETING = "Hello! How can I help you today?"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def parse_sms(form: dict[str, str]) -> list[Inbound]:
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    sender = form.get("From", "")
    if form.get("MessageStatus") and "Body" not in form:  # a status callback
        return [
            Inbound(
                form.get("To", ""),
                f"status:{sid}:{form['MessageStatus']}",
                "status",
                payload={
                    "status": form["MessageStatus"],
                    "of": sid,
                    "error_code": form.get("ErrorCode"),
                },
            )
        ]
    if not sid or not sender:
        raise PayloadError("an SMS webhook without MessageSid or From")
    inbound = Inbound(sender, sid, "text", form.get("Body", ""))
    media = int(form.get("NumMedia") or 0)
    if media:
        inbound.type = media_type(form.get("MediaContentType0"))
        inbound.payload = {
            "url": form.get("MediaUrl0"),
            "mime_type": form.get("MediaContentType0"),
            "media": media,
        }
    elif form.get("Latitude") and form.get("Longitude"):  # WhatsApp through Twilio
        inbound.type = "location"
        inbound.payload = {"latitude": form["Latitude"], "longitude": form["Longitude"]}
    inbound.address = {"to": sender, "from": form.get("To", "")}
    return [inbound]


def render(reply: dict[str, Any]) -> Rendered:
    kind = reply.get("type", "text")
    if kind in ("image", "video", "audio", "file"):
        caption = clip(str(reply.get("text") or ""), SMS_LIMIT)
        return Rendered([{"Body": caption, "MediaUrl": reply["url"]}])
    rendered = text_only(reply)
    bodies = [{"Body": clip(body, SMS_LIMIT)} for body in rendered.bodies]
    return Rendered(bodies, rendered.degraded)


def call(config: ChannelConfig, address: dict[str, Any], body: dict[str, Any]) -> Call:
    base = (config.api_base_url or DEFAULT_API).rstrip("/")
    sid = config.secrets.get("account_sid", "")
    return Call(
        "POST",
        f"{base}/2010-04-01/Accounts/{sid}/Messages.json",
        data={"To": address["to"], "From": address["from"], **body},
        auth=(sid, config.secrets.get("auth_token", "")),
    )


def outcome(response: httpx.Response) -> Outcome:
    """Errors are `{"code", "message", "more_info", "status"}`."""
    if response.is_success:
        return DELIVERED
    body = json_body(response)
    detail = f"HTTP {response.status_code} code {body.get('code')}: {body.get('message', '')}"
    result = http_outcome(response, detail)
    if body.get("code") in RETRY_CODES and not result.retry:
        return Outcome(False, retry=True, error=detail)
    return result


# Voice


def parse_voice(form: dict[str, str]) -> Inbound:
    """A speech result. Its delivery id is the call and what was heard (with the
    recognizer's confidence): Twilio's idempotency header is not covered by the signature,
    so it cannot be what makes a replayed request new."""
    call_sid = form.get("CallSid", "")
    speech = form.get("SpeechResult", "")
    if not call_sid:
        raise PayloadError("a voice webhook without CallSid")
    heard = hashlib.sha256(f"{speech}\x00{form.get('Confidence', '')}".encode()).hexdigest()
    inbound = Inbound(form.get("From", ""), f"{call_sid}:{heard[:32]}", "text", speech)
    inbound.payload = {"call_sid": call_sid, "confidence": form.get("Confidence")}
    inbound.address = {"call_sid": call_sid}
    return inbound


def render_voice(reply: dict[str, Any]) -> Rendered:
    """A reply as words to speak (`<Say>`); anything but text is named as spoken."""
    kind = reply.get("type", "text")
    text = as_text(reply) if kind not in ("typing", "reaction") else ""
    return Rendered([text] if text else [], None if kind == "text" else f"{kind}->speech")


def twiml(say: str | None, action_url: str, language: str = "en-US") -> str:
    """Speak `say` (if any), then listen for the caller's answer, posted to `action_url`."""
    said = f"<Say language={quoteattr(language)}>{escape(say)}</Say>" if say else ""
    gather = (
        f'<Gather input="speech" action={quoteattr(action_url)} method="POST" '
        f'speechTimeout="auto" language={quoteattr(language)}>{said}</Gather>'
    )
    # no answer at all: the call ends politely
    silent = f"<Say language={quoteattr(language)}>{escape(NO_ANSWER)}</Say><Hangup/>"
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{gather}{silent}</Response>'
