"""The Teams OpenID documents (realtime/channels/teams.py): the `jwks_uri` inside the
metadata passes the outbound-URL rules as the metadata URL does, the caller is told no
internal error text, and a failure is remembered briefly instead of refetched on every
webhook. Against a loopback server speaking OpenID metadata."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from realtime.channels import teams
from realtime.channels.config import ChannelConfig
from realtime.channels.signatures import SignatureError
from realtime.outbound import url_problem
from tests.utils.channels import ChannelServer

APP_ID = "c9e8c047-2a74-40a2-b28a-b162d5f5327c"


class MetadataServer:
    """Serves OpenID metadata whose `jwks_uri` is whatever the test says; counts GETs."""

    def __init__(self) -> None:
        self.jwks_uri = ""
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                raw = json.dumps({"issuer": teams.ISSUER, "jwks_uri": server.jwks_uri}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/openid"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def metadata():
    server = MetadataServer()
    yield server
    server.close()


async def _verify(keys: teams.OpenIdKeys, metadata_url: str) -> str:
    signer = ChannelServer()
    try:
        token = signer.bot_token(APP_ID, "https://smba.trafficmanager.net/teams/")
    finally:
        signer.close()
    config = ChannelConfig(
        "t", "teams", True, {"app_id": APP_ID, "openid_metadata_url": metadata_url}
    )
    activity = {"serviceUrl": "https://smba.trafficmanager.net/teams/"}
    with pytest.raises(SignatureError) as refused:
        await teams.verify(keys, config, f"Bearer {token}", activity)
    return str(refused.value)


@pytest.mark.parametrize(
    "jwks_host", ["[::ffff:127.0.0.1]", "127.0.0.1", "[64:ff9b::7f00:1]", "169.254.169.254"]
)
async def test_a_private_jwks_uri_is_refused_with_a_generic_text(metadata, jwks_host):
    # the metadata URL is this loopback server (as if it were public); the keys URL inside
    # it is judged by the production rules
    async def check(url: str) -> str | None:
        return None if url == metadata.url else await url_problem(url, allow_private=False)

    metadata.jwks_uri = f"https://{jwks_host}:{metadata.port}/keys"
    async with httpx.AsyncClient() as http:
        keys = teams.OpenIdKeys(http, check)
        text = await _verify(keys, metadata.url)
        assert text == "the OpenID signing keys are unavailable"
        assert metadata.paths == ["/openid"]  # the keys URL was never fetched
        # the failure is remembered: the next webhook does not fetch again
        assert await _verify(keys, metadata.url) == text
        assert metadata.paths == ["/openid"]


async def test_an_unreachable_metadata_url_tells_the_caller_nothing_internal(metadata):
    closed = f"http://127.0.0.1:{metadata.port}/openid"
    metadata.close()
    async with httpx.AsyncClient() as http:
        keys = teams.OpenIdKeys(http, lambda url: url_problem(url, allow_private=True))
        text = await _verify(keys, closed)
    assert text == "the OpenID signing keys are unavailable"
    assert "127.0.0.1" not in text and "onnect" not in text
