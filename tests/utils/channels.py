"""The channel tests' loopback provider and webhook signing: they live in bench/webhooks.py
(the chaos bench's probes use them too, and bench code must not import tests/)."""

from __future__ import annotations

import base64

from bench.webhooks import ChannelServer, meta_headers, slack_headers, twilio_headers

__all__ = ["ChannelServer", "b64", "meta_headers", "slack_headers", "twilio_headers"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
