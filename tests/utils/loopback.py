"""A loopback HTTP server that speaks a provider's wire format, scripted per test."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Events(list):
    """A scripted body sent as server-sent events: a list of (event name or None, data)."""

    def encode(self) -> bytes:
        chunks = []
        for event, data in self:
            line = data if isinstance(data, str) else json.dumps(data)
            chunks.append((f"event: {event}\n" if event else "") + f"data: {line}\n\n")
        return "".join(chunks).encode()


class ScriptedServer:
    """Answers each POST with the next scripted (status, body, headers), after `delay_s`;
    records requests (path with query, headers, JSON body)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, Any, dict[str, str]]] = []
        self.default: tuple[int, Any, dict[str, str]] = (500, {"error": {"message": "down"}}, {})
        self.requests: list[dict[str, Any]] = []
        self.delay_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                server.requests.append(
                    {"path": self.path, "headers": self.headers,  # case-insensitive
                     "body": json.loads(self.rfile.read(length) or b"{}")}
                )  # fmt: skip
                status, body, headers = server.script.pop(0) if server.script else server.default
                time.sleep(server.delay_s)
                if isinstance(body, Events):
                    raw, kind = body.encode(), "text/event-stream"
                else:
                    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                    kind = "application/json"
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(raw)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_completion(text: str) -> dict[str, Any]:
    """An OpenAI Chat Completions response body."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }  # fmt: skip


def anthropic_message(text: str) -> dict[str, Any]:
    """An Anthropic Messages response body."""
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 12, "output_tokens": 5},
    }  # fmt: skip


def gemini_content(text: str) -> dict[str, Any]:
    """A Gemini generateContent response body."""
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5,
                          "totalTokenCount": 17},
    }  # fmt: skip


def hf_generated(text: str) -> list[dict[str, Any]]:
    """A Hugging Face Inference API (text-generation) response body."""
    return [{"generated_text": text, "details": {"finish_reason": "eos_token",
                                                 "generated_tokens": 5}}]  # fmt: skip


def streamed(provider: str, pieces: list[str]) -> Events:
    """`pieces` as the provider streams them, in its own event format."""
    if provider in ("openai", "openai_compatible", "azure_openai"):
        chunks = [
            (None, {"id": "c1", "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": piece}}]})
            for piece in pieces
        ]  # fmt: skip
        usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        return Events([*chunks, (None, {"choices": [], "usage": usage}), (None, "[DONE]")])
    if provider == "anthropic":
        return Events([
            ("message_start", {"type": "message_start",
                               "message": {"id": "msg_1", "usage": {"input_tokens": 12}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
            *[("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": piece}})
              for piece in pieces],
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                               "usage": {"output_tokens": 5}}),
            ("message_stop", {"type": "message_stop"}),
        ])  # fmt: skip
    if provider == "gemini":
        events = [(None, gemini_content(piece)) for piece in pieces]
        return Events(events)
    assert provider == "huggingface"
    tokens = [
        (None, {"token": {"id": i, "text": piece, "logprob": -0.1, "special": False},
                "generated_text": None, "details": None})
        for i, piece in enumerate(pieces)
    ]  # fmt: skip
    last = {"token": {"id": 0, "text": "</s>", "logprob": 0.0, "special": True},
            "generated_text": "".join(pieces),
            "details": {"finish_reason": "eos_token", "generated_tokens": 5}}  # fmt: skip
    return Events([*tokens, (None, last)])
