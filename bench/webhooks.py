"""What the channel providers send and answer, shared by the benches and the tests: a
WhatsApp Cloud API webhook envelope, the signatures each provider puts on its webhooks,
and a loopback server that speaks the channels' send APIs (and Microsoft's token and
OpenID endpoints) as they answer on success.

It lives in `bench/` because bench code must not import `tests/`; the tests import it
from here (`tests/utils/channels.py`, `tests/utils/channel_samples.py`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from realtime.channels.signatures import meta_signature, slack_signature, twilio_signature

WA_PHONE_ID = "106540352242922"
WA_USER = "16315551181"


def whatsapp(
    message: dict[str, Any] | None = None, statuses: list[Any] | None = None, user: str = WA_USER
) -> dict[str, Any]:
    """A WhatsApp Cloud API webhook: `message` (its id, type and content) from `user`,
    and/or delivery `statuses`."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": WA_PHONE_ID},
    }
    if message is not None:
        value["contacts"] = [{"profile": {"name": "Sheena Nelson"}, "wa_id": user}]
        value["messages"] = [{"from": user, "timestamp": "1749416383", **message}]
    if statuses is not None:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }


def meta_headers(app_secret: str, body: bytes) -> dict[str, str]:
    """WhatsApp's and Messenger's signature headers."""
    return {
        "X-Hub-Signature-256": meta_signature(app_secret, body),
        "Content-Type": "application/json",
    }


def slack_headers(
    signing_secret: str,
    body: bytes,
    at: float | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Slack's signature headers, signed at `at` (now by default)."""
    timestamp = str(int(time.time() if at is None else at))
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_signature(signing_secret, timestamp, body),
        "Content-Type": content_type,
    }


def twilio_headers(
    auth_token: str, url: str, form: dict[str, str] | Iterable[tuple[str, str]]
) -> dict[str, str]:
    """Twilio's signature headers for a form POSTed to `url`."""
    pairs = form.items() if isinstance(form, dict) else form
    return {
        "X-Twilio-Signature": twilio_signature(auth_token, url, pairs),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def _success(path: str) -> tuple[int, Any]:
    """What each documented send API answers when all is well."""
    if path.endswith("/me/messages"):
        return 200, {"recipient_id": "1254477777772919", "message_id": "m_AG5Hz2Uq7tuwNEhXfYYK"}
    if "/messages" in path and "/Accounts/" not in path:
        return 200, {
            "messaging_product": "whatsapp",
            "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],
            "messages": [{"id": "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}],
        }
    if path.startswith("/api/"):
        return 200, {"ok": True, "channel": "C0LAN2Q65", "ts": "1503435956.000247"}
    if "/Accounts/" in path:
        return 201, {"sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "status": "queued"}
    if path.endswith("/oauth2/v2.0/token"):
        return 200, {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": "eyJ0eXAi.bot-connector-token",
        }
    if "/v3/conversations/" in path:
        return 200, {"id": "1:reply-activity"}
    return 404, {"error": "not found"}


class ChannelServer:
    """Answers each POST with the next scripted (status, body, headers), else what the API
    answers on success; serves the OpenID metadata and keys; records every request."""

    def __init__(self) -> None:
        self.script: list[tuple[int, Any, dict[str, str]]] = []
        self.requests: list[dict[str, Any]] = []
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                if self.path == "/openid":
                    self._send(
                        200,
                        {
                            "issuer": "https://api.botframework.com",
                            "jwks_uri": f"{server.url}/keys",
                            "id_token_signing_alg_values_supported": ["RS256"],
                        },
                        {},
                    )
                elif self.path == "/keys":
                    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(server.key.public_key()))
                    public.update({"kid": server.kid, "use": "sig", "alg": "RS256"})
                    self._send(200, {"keys": [public]}, {})
                else:
                    self._send(404, {}, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                kind = self.headers.get("content-type", "")
                # headers kept as the Message they are: case-insensitive
                record = {
                    "path": self.path,
                    "headers": self.headers,
                    "raw": raw,
                    "at": time.perf_counter(),
                }
                if "json" in kind:
                    record["json"] = json.loads(raw or b"{}")
                else:
                    record["form"] = dict(parse_qsl(raw.decode()))
                with server._lock:
                    server.requests.append(record)
                    scripted = server.script.pop(0) if server.script else None
                if scripted is None:
                    status, body = _success(self.path)
                    headers: dict[str, str] = {}
                else:
                    status, body, headers = scripted
                self._send(status, body, headers)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def sends(self, path_part: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if path_part in r["path"]]

    def wait_for(self, count: int, path_part: str = "", timeout_s: float = 20.0) -> list[dict]:
        """The first `count` requests to a path containing `path_part`, once they came."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.sends(path_part)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{len(self.sends(path_part))} of {count} requests to {path_part!r}")

    def bot_token(
        self,
        app_id: str,
        service_url: str,
        *,
        signing_key: rsa.RSAPrivateKey | None = None,
        **overrides: Any,
    ) -> str:
        """A JWT as the Bot Connector signs it, with this server's key (with another
        `signing_key`: as a forger would)."""
        now = int(time.time())
        claims = {
            "iss": "https://api.botframework.com",
            "aud": app_id,
            "serviceurl": service_url,
            "nbf": now - 60,
            "exp": now + 3600,
            "iat": now - 60,
        }
        claims.update(overrides)
        key = signing_key or self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
