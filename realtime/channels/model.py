"""The platform's inbound message model: what every channel's webhooks are parsed into.

An end user sends one of `INBOUND_TYPES`; a channel module turns each of its webhook
payloads into `Inbound` messages (the provider's message id, the sender's id on the
channel, the type, a text the engine can read, the type's fields in `payload`, and where
a reply must go in `address`).

The replies go the other way: their model (`REPLY_TYPES`, `Rendered`, `as_text`) is the
engine's (realtime/engine/replies.py), and each channel renders them into its format,
degrading what it cannot show (`text_only`, for a channel that shows text alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from realtime.engine.replies import COMMON_TYPES, REPLY_TYPES, Rendered, as_text

INBOUND_TYPES = (
    *COMMON_TYPES,
    "quick_reply",  # the user picked one of a quick-replies reply's options
    "postback",  # the user pressed a button (or picked a list row, a card's button)
    "reaction",
    "status",  # delivered / read receipts
    "typing",
)
# every type a message may have, in or out (the API takes these: realtime/api/schemas.py)
MODEL_TYPES = tuple(dict.fromkeys(INBOUND_TYPES + REPLY_TYPES))


@dataclass
class Inbound:
    """One end-user message (or receipt) from a channel's webhook."""

    sender: str  # the end user's id on the channel (phone number, PSID, Slack user, …)
    message_id: str  # the provider's id: a delivery seen twice is handled once
    type: str
    text: str = ""
    payload: dict[str, Any] | None = None
    address: dict[str, Any] = field(default_factory=dict)  # where the replies go
    name: str | None = None  # the sender's display name, when the channel gives it


def text_only(reply: dict[str, Any]) -> Rendered:
    """The reply as text, for a channel that has nothing better (SMS, voice)."""
    kind = reply.get("type", "text")
    if kind == "typing":
        return Rendered([], degraded=None)  # nothing to show: not sent
    text = as_text(reply)
    return Rendered([text] if text else [], degraded=None if kind == "text" else f"{kind}->text")
