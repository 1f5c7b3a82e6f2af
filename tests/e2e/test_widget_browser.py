"""The web widget in headless Chromium (Debian's package, driven by Playwright): a page of
an allowed origin loads the embed snippet, the visitor chats, reloads, and carries on."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from dashboards.screenshots import CHROMIUM_ARGS
from tests.api.test_channels import RICH_FLOW

CHROMIUM = Path("/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def live_api(services, settings):
    """The API served by uvicorn on a port of its own (the browser needs a real server)."""
    from realtime.app import create_app

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


def _page_server(html: dict[str, str]) -> tuple[ThreadingHTTPServer, str]:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html["page"].encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_the_embedded_widget_chats_and_survives_a_reload(live_api, client, tenant):
    from playwright.sync_api import expect, sync_playwright

    html: dict[str, str] = {}
    httpd, origin = _page_server(html)
    try:
        api = httpx.Client(base_url=live_api, headers=tenant.headers, timeout=30)
        assert api.put("/v1/flow", json=RICH_FLOW).status_code == 200
        configured = api.put("/v1/channels/web", json={"allowed_origins": [origin]})
        assert configured.status_code == 200, configured.text
        snippet = api.get("/v1/channels/web/embed")
        assert snippet.status_code == 200
        html["page"] = (
            f"<!doctype html><html><head><title>Shop</title></head><body>"
            f"<h1>Our shop</h1>{snippet.text}</body></html>"
        )

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(origin)
            expect(page.locator("#chatlake-widget")).to_have_attribute("data-ready", "true")
            page.fill("#chatlake-input", "hello")
            page.click("#chatlake-send")
            replies = page.locator(".chatlake-out")
            expect(replies.first).to_be_visible(timeout=20_000)
            first_reply = replies.first.inner_text()
            assert first_reply

            page.reload()
            expect(page.locator("#chatlake-widget")).to_have_attribute("data-ready", "true")
            shown = page.locator(".chatlake-msg").all_inner_texts()
            assert shown[:2] == ["hello", first_reply]  # the conversation came back

            page.fill("#chatlake-input", "menu")
            page.click("#chatlake-send")
            button = page.locator(".chatlake-choices button", has_text="Track order").first
            expect(button).to_be_visible(timeout=20_000)
            expect(page.locator(".chatlake-card strong", has_text="Boots")).to_be_visible()
            before = page.locator(".chatlake-out").count()
            button.click()  # a button's postback goes back as the visitor's message
            expect(page.locator(".chatlake-in", has_text="Track order")).to_be_visible()
            page.wait_for_function(
                f"document.querySelectorAll('.chatlake-out').length > {before}", timeout=20_000
            )
            visitor = page.evaluate(f"localStorage.getItem('chatlake:{tenant.tenant_id}:visitor')")
            browser.close()

        # the whole exchange is one conversation of one visitor, on the web channel
        listed = api.get("/v1/conversations", params={"user_id": f"web:{visitor}"}).json()
        [conversation] = listed["conversations"]
        assert conversation["channel"] == "web"
        messages = api.get(f"/v1/conversations/{conversation['conversation_id']}").json()
        inbound = [m["text"] for m in messages["messages"] if m["direction"] == "in"]
        assert inbound == ["hello", "menu", "Track order"]
    finally:
        httpd.shutdown()
        httpd.server_close()
