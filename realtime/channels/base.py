"""What every channel module provides, and the pieces they share.

A channel module exposes:
- `parse(...) -> list[Inbound]`: its webhook payload in the platform's message model;
- `render(reply) -> Rendered`: a reply in its format (what it lacks degraded and named);
- `call(config, address, body) -> Call`: the HTTP request that sends one rendered body;
- `outcome(response) -> Outcome`: whether that request delivered, may be retried (rate
  limits, the provider's own failures) or must be dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class PayloadError(ValueError):
    """The webhook's body is not what the channel documents."""


@dataclass
class Call:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    data: dict[str, Any] | None = None
    auth: tuple[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    retry: bool = False
    retry_after_s: float | None = None
    error: str | None = None


DELIVERED = Outcome(True)


def retry_after(response: httpx.Response) -> float | None:
    """The provider's Retry-After (seconds or an HTTP date), if it sent one."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def http_outcome(response: httpx.Response, error: str | None = None) -> Outcome:
    """The common reading: 2xx delivered; 429 and 5xx retried; other 4xx dead-lettered."""
    if response.is_success and error is None:
        return DELIVERED
    # the provider's own words only where the channel module read them: a raw body from
    # wherever api_base_url points is not copied into what the tenant can read back
    detail = error or f"HTTP {response.status_code}"
    if response.status_code == 429 or response.status_code >= 500:
        return Outcome(False, retry=True, retry_after_s=retry_after(response), error=detail)
    return Outcome(False, error=detail)


def clip(text: str, limit: int) -> str:
    """`text` within a provider's length limit (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def media_type(mime: str | None) -> str:
    """The model's type for a MIME type: image, audio, video, or file."""
    major = (mime or "").split("/", 1)[0]
    return major if major in ("image", "audio", "video") else "file"
