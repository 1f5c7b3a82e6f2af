"""The web widget: a small chat UI in plain JavaScript (static/widget.js, served as is)
that a tenant embeds with a snippet from `GET /v1/channels/web/embed`.

The widget talks to `POST /v1/channels/web/{tenant_id}` with the tenant's publishable
widget key, accepted only from the origins the tenant allowed; a visitor id kept in the
browser's localStorage makes the conversation continue across page reloads
(`GET /v1/channels/web/{tenant_id}?visitor_id=` returns it).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Any
from xml.sax.saxutils import quoteattr

from realtime.engine.replies import Rendered, as_text

VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# what widget.js draws natively; the rest arrives as text
NATIVE = {
    "text",
    "image",
    "file",
    "audio",
    "video",
    "location",
    "contact",
    "quick_replies",
    "buttons",
    "carousel",
    "list",
}


def render(reply: dict[str, Any]) -> Rendered:
    kind = reply.get("type", "text")
    if kind in NATIVE:
        return Rendered([reply])
    if kind in ("typing", "reaction"):
        return Rendered([], degraded=f"{kind}->none")
    return Rendered([{"type": "text", "text": as_text(reply)}], degraded=f"{kind}->text")


@lru_cache(maxsize=1)
def widget_js() -> str:
    return resources.files("realtime.channels").joinpath("static/widget.js").read_text()


def embed_snippet(api_base: str, tenant_id: str, widget_key: str) -> str:
    """The HTML a tenant pastes into its pages."""
    src = f"{api_base.rstrip('/')}/v1/channels/web/widget.js"
    return (
        f"<script src={quoteattr(src)} data-chatlake-tenant={quoteattr(tenant_id)} "
        f"data-chatlake-key={quoteattr(widget_key)} data-chatlake-api={quoteattr(api_base)} "
        "defer></script>\n"
    )
