"""Microsoft Teams through the Bot Framework: activities POSTed with a JWT the Bot
Connector signs; replies POSTed to the activity's `serviceUrl` with a token from the
Microsoft identity platform (client credentials of the bot's app).

Verification: the bearer token's signature against the keys of the configured OpenID
metadata (`openid_metadata_url`, its `jwks_uri`), the issuer, the audience (the bot's
`app_id`), the expiry, and the `serviceurl` claim against the activity's.

Natively: text, media attachments, quick replies (suggested actions), buttons (a hero
card), carousels and lists (hero cards in a carousel or list layout), typing. A location,
a contact and a template become text; bots cannot react, so a reaction is not sent.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import jwt

from realtime.channels.base import Call, Outcome, PayloadError, http_outcome
from realtime.channels.config import ChannelConfig
from realtime.channels.model import Inbound
from realtime.channels.signatures import SignatureError
from realtime.engine.replies import Rendered, as_text

ISSUER = "https://api.botframework.com"
DEFAULT_LOGIN = "https://login.microsoftonline.com"
TOKEN_SCOPE = "https://api.botframework.com/.default"
KEYS_SECONDS = 3600.0  # how long fetched signing keys are trusted before a refetch
REFETCH_SECONDS = 60.0  # an unknown kid refetches the keys at most this often
FAILURE_SECONDS = 30.0  # a failed fetch is answered from memory this long: no hammering
LEEWAY_S = 300  # the Bot Framework allows five minutes of clock skew
MIME = {
    "image": "image/png",
    "audio": "audio/mpeg",
    "video": "video/mp4",
    "file": "application/octet-stream",
    "sticker": "image/png",
}


log = logging.getLogger(__name__)
UrlCheck = Callable[[str], Awaitable[str | None]]  # why a URL may not be fetched, or None


class KeysUnavailable(SignatureError):
    """The OpenID keys could not be fetched: one generic text for the caller (the cause,
    which may describe the platform's network, goes to the log only)."""

    def __init__(self) -> None:
        super().__init__("the OpenID signing keys are unavailable")


class OpenIdKeys:
    """The signing keys of OpenID metadata documents, fetched and cached per URL. Every
    URL fetched (the metadata's and the `jwks_uri` inside it) passes `check`, the
    outbound-URL rules; a failure is remembered for `FAILURE_SECONDS`."""

    def __init__(self, http: httpx.AsyncClient, check: UrlCheck) -> None:
        self.http = http
        self.check = check
        self._keys: dict[str, tuple[jwt.PyJWKSet, float]] = {}
        self._failed: dict[str, float] = {}

    async def _get_json(self, url: str) -> Any:
        problem = await self.check(url)
        if problem:
            raise ValueError(f"refused: {problem}")
        # no redirects: a redirect's target would escape the check
        response = await self.http.get(url, timeout=10, follow_redirects=False)
        return response.raise_for_status().json()

    async def _fetch(self, metadata_url: str) -> jwt.PyJWKSet:
        failed = self._failed.get(metadata_url)
        if failed is not None and time.monotonic() - failed < FAILURE_SECONDS:
            raise KeysUnavailable()
        try:
            metadata = await self._get_json(metadata_url)
            keys = jwt.PyJWKSet.from_dict(await self._get_json(str(metadata["jwks_uri"])))
        except (httpx.HTTPError, ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
            log.warning("the OpenID keys of %s could not be fetched: %s", metadata_url, exc)
            self._failed[metadata_url] = time.monotonic()
            raise KeysUnavailable() from None
        self._failed.pop(metadata_url, None)
        self._keys[metadata_url] = (keys, time.monotonic())
        return keys

    async def key(self, metadata_url: str, kid: str) -> jwt.PyJWK:
        cached = self._keys.get(metadata_url)
        fresh = cached is not None and time.monotonic() - cached[1] < KEYS_SECONDS
        keys = cached[0] if cached and fresh else await self._fetch(metadata_url)
        for candidate in keys.keys:
            if candidate.key_id == kid:
                return candidate
        # keys roll over: an unknown kid is looked up once more, though not on every
        # forged token
        if fresh and cached and time.monotonic() - cached[1] >= REFETCH_SECONDS:
            for candidate in (await self._fetch(metadata_url)).keys:
                if candidate.key_id == kid:
                    return candidate
        raise SignatureError(f"no signing key {kid!r} in the OpenID metadata's keys")


async def verify(
    keys: OpenIdKeys, config: ChannelConfig, authorization: str | None, activity: dict[str, Any]
) -> dict[str, Any]:
    """The token's claims, if the Bot Connector signed it for this bot and this activity."""
    app_id = config.secrets.get("app_id")
    metadata_url = config.secrets.get("openid_metadata_url")
    if not app_id or not metadata_url:
        raise SignatureError("the channel has no app_id or openid_metadata_url configured")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise SignatureError("missing Authorization: Bearer token")
    try:
        header = jwt.get_unverified_header(token)
        key = await keys.key(metadata_url, str(header.get("kid")))
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=["RS256"],
            audience=app_id,
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iss", "aud", "serviceurl"]},
        )
    except jwt.PyJWTError as exc:
        raise SignatureError(f"the token is not valid: {exc}") from None
    # the reply goes to the activity's serviceUrl with the bot's token: only where the
    # Bot Connector said it comes from
    service_url = str(claims.get("serviceurl", ""))
    if service_url.rstrip("/") != str(activity.get("serviceUrl", "")).rstrip("/"):
        raise SignatureError("the token was issued for another serviceUrl")
    return claims


def parse(activity: dict[str, Any]) -> list[Inbound]:
    kind = activity.get("type")
    sender = str((activity.get("from") or {}).get("id", ""))
    activity_id = str(activity.get("id") or "")
    if not kind or not sender or not activity_id:
        raise PayloadError("an activity needs type, id and from.id")
    if not activity.get("serviceUrl") or not (activity.get("conversation") or {}).get("id"):
        raise PayloadError("an activity needs serviceUrl and conversation.id")
    address = {
        "service_url": activity["serviceUrl"],
        "conversation_id": activity["conversation"]["id"],
        "activity_id": activity_id,
        "bot": activity.get("recipient"),
        "user": activity.get("from"),
    }
    inbound = Inbound(
        sender,
        activity_id,
        "text",
        str(activity.get("text") or ""),
        address=address,
        name=(activity.get("from") or {}).get("name"),
    )
    if kind == "message":
        files = [
            a
            for a in activity.get("attachments") or []
            if a.get("contentUrl") and a.get("contentType") != "text/html"
        ]
        if activity.get("value") is not None:  # a messageBack press, a card's submit
            value = activity["value"]
            chosen = value["payload"] if isinstance(value, dict) and "payload" in value else value
            inbound.type = "postback"
            inbound.payload = {"payload": chosen, "title": inbound.text}
        elif files:
            content_type = str(files[0].get("contentType", ""))
            inbound.type = (
                content_type.split("/", 1)[0]
                if content_type.split("/", 1)[0] in ("image", "audio", "video")
                else "file"
            )
            inbound.payload = {
                "url": files[0]["contentUrl"],
                "name": files[0].get("name"),
                "mime_type": content_type,
            }
        return [inbound]
    if kind == "messageReaction":
        added = activity.get("reactionsAdded") or []
        if not added:
            return []
        inbound.type = "reaction"
        inbound.text = str(added[0].get("type", ""))
        inbound.payload = {"emoji": inbound.text, "message_id": activity.get("replyToId")}
        return [inbound]
    if kind == "typing":
        inbound.type = "typing"
        return [inbound]
    return []  # conversationUpdate, installationUpdate, …


def _action(choice: dict[str, Any]) -> dict[str, Any]:
    if choice.get("url"):
        return {"type": "openUrl", "title": choice["title"], "value": choice["url"]}
    # messageBack: the press comes back as a postback with the payload, showing the title
    payload = str(choice.get("payload") or choice["title"])
    return {
        "type": "messageBack",
        "title": choice["title"],
        "displayText": choice["title"],
        "text": choice["title"],
        "value": {"payload": payload},
    }


def _hero(
    title: str | None, text: str | None, buttons: list[dict[str, Any]], image_url: str | None = None
) -> dict[str, Any]:
    content: dict[str, Any] = {"buttons": [_action(b) for b in buttons]}
    if title:
        content["title"] = title
    if text:
        content["text"] = text
    if image_url:
        content["images"] = [{"url": image_url}]
    return {"contentType": "application/vnd.microsoft.card.hero", "content": content}


def render(reply: dict[str, Any]) -> Rendered:
    kind = reply.get("type", "text")
    text = str(reply.get("text") or "")
    activity: dict[str, Any] | None = None
    match kind:
        case "text":
            activity = {"type": "message", "text": text}
        case "image" | "audio" | "video" | "file" | "sticker":
            attachment = {"contentType": MIME[kind], "contentUrl": reply["url"]}
            if reply.get("filename"):
                attachment["name"] = reply["filename"]
            activity = {"type": "message", "text": text, "attachments": [attachment]}
        case "quick_replies":
            activity = {
                "type": "message",
                "text": text,
                "suggestedActions": {"actions": [_action(o) for o in reply.get("options", [])]},
            }
        case "buttons":
            activity = {
                "type": "message",
                "attachments": [_hero(None, text, reply.get("buttons", []))],
            }
        case "carousel":
            cards = [
                _hero(c["title"], c.get("subtitle"), c.get("buttons", []), c.get("image_url"))
                for c in reply.get("cards", [])
            ]
            activity = {
                "type": "message",
                "text": text,
                "attachmentLayout": "carousel",
                "attachments": cards,
            }
        case "list":
            cards = [
                _hero(
                    i["title"],
                    i.get("description"),
                    [{"title": i["title"], "payload": i.get("payload")}],
                )
                for i in reply.get("items", [])
            ]
            activity = {
                "type": "message",
                "text": text,
                "attachmentLayout": "list",
                "attachments": cards,
            }
        case "typing":
            return Rendered([{"type": "typing"}])
        case "reaction":
            return Rendered([], degraded="reaction->none")
    if activity is None:
        return Rendered([{"type": "message", "text": as_text(reply)}], degraded=f"{kind}->text")
    return Rendered([activity])


class Tokens:
    """The bot's access tokens for the Bot Connector, cached until shortly before expiry."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}

    @staticmethod
    def _key(config: ChannelConfig) -> tuple[str, ...]:
        """A token is the tenant's own: keyed by the tenant and the credentials it was
        issued for, so no other tenant configuring the same app id is ever handed it."""
        login = (config.api_base_url or DEFAULT_LOGIN).rstrip("/")
        secret = hashlib.sha256(config.secrets.get("app_password", "").encode()).hexdigest()
        return (config.tenant_id, login, config.secrets.get("app_id", ""), secret)

    async def token(self, config: ChannelConfig) -> str:
        login = (config.api_base_url or DEFAULT_LOGIN).rstrip("/")
        app_id = config.secrets.get("app_id", "")
        cached = self._tokens.get(self._key(config))
        if cached and cached[1] > time.monotonic():
            return cached[0]
        response = await self.http.post(
            f"{login}/botframework.com/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": app_id,
                "client_secret": config.secrets.get("app_password", ""),
                "scope": TOKEN_SCOPE,
            },
            timeout=10,
        )
        response.raise_for_status()
        body = response.json()
        expires = time.monotonic() + max(60.0, float(body.get("expires_in", 3600)) - 300)
        self._tokens[self._key(config)] = (body["access_token"], expires)
        return str(body["access_token"])

    def forget(self, config: ChannelConfig) -> None:
        self._tokens.pop(self._key(config), None)


def call(config: ChannelConfig, address: dict[str, Any], body: dict[str, Any], token: str) -> Call:
    service = str(address["service_url"]).rstrip("/")
    conversation, activity_id = address["conversation_id"], address["activity_id"]
    activity = {
        **body,
        "from": address.get("bot"),
        "recipient": address.get("user"),
        "conversation": {"id": conversation},
        "replyToId": activity_id,
    }
    return Call(
        "POST",
        f"{service}/v3/conversations/{quote(conversation, safe='')}/activities/"
        f"{quote(activity_id, safe='')}",
        headers={"Authorization": f"Bearer {token}"},
        json=activity,
    )


def outcome(response: httpx.Response) -> Outcome:
    return http_outcome(response)
