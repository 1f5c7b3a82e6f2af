"""Webhook signatures, as each provider documents them; every comparison constant-time.

- WhatsApp Cloud API and Messenger (Meta): `X-Hub-Signature-256: sha256=<hex>`, the
  HMAC-SHA256 of the raw body under the app secret.
- Slack: `X-Slack-Signature: v0=<hex>`, the HMAC-SHA256 of `v0:<timestamp>:<raw body>`
  under the signing secret, with `X-Slack-Request-Timestamp` no more than five minutes
  from now (a replayed request is refused).
- Twilio: `X-Twilio-Signature`, the base64 HMAC-SHA1 of the full URL followed by each
  POST parameter's name and value, sorted by name, under the auth token.

A missing secret refuses every request: a channel is never open for want of one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable

SLACK_MAX_AGE_S = 5 * 60


class SignatureError(Exception):
    """The request is not what the provider signed (or the channel has no secret)."""


def _secret(secret: str | None) -> bytes:
    if not secret:
        raise SignatureError("the channel has no secret configured: every request is refused")
    return secret.encode()


def meta_signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(_secret(app_secret), body, hashlib.sha256).hexdigest()


def verify_meta(app_secret: str | None, body: bytes, header: str | None) -> None:
    """WhatsApp Cloud API and Messenger webhooks."""
    expected = meta_signature(app_secret or "", body)  # no secret: refused here
    if not header or not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise SignatureError("X-Hub-Signature-256 does not match the body")


def slack_signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(_secret(signing_secret), base, hashlib.sha256).hexdigest()


def verify_slack(
    signing_secret: str | None,
    body: bytes,
    timestamp: str | None,
    header: str | None,
    now: float | None = None,
) -> None:
    _secret(signing_secret)
    try:
        sent = int(timestamp or "")
    except ValueError:
        raise SignatureError("X-Slack-Request-Timestamp is missing or not a number") from None
    if abs((time.time() if now is None else now) - sent) > SLACK_MAX_AGE_S:
        raise SignatureError("the request is more than five minutes old (or from the future)")
    expected = slack_signature(signing_secret or "", str(sent), body)
    if not header or not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise SignatureError("X-Slack-Signature does not match the body")


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(_secret(auth_token), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_twilio(
    auth_token: str | None, url: str, params: Iterable[tuple[str, str]], header: str | None
) -> None:
    """`url` as Twilio requested it (scheme, host, path and query); `params` the POST
    form's fields (none for a GET)."""
    expected = twilio_signature(auth_token or "", url, params)  # no token: refused here
    if not header or not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise SignatureError("X-Twilio-Signature does not match the URL and parameters")


def constant_time_equal(expected: str, given: str) -> bool:
    """For tokens compared as they are (Meta's verify token, the widget key)."""
    return hmac.compare_digest(expected.encode(), given.encode())
