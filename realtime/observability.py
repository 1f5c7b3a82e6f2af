"""Request ids and the access log, Prometheus metrics, and the request-size limit.

Both middlewares are plain ASGI (no per-request task or body copy), because they sit in
front of the hot path.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from typing import Any

import structlog
from fastapi import HTTPException
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from realtime.api.errors import error_response

REQUESTS = Counter(
    "chatlake_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "chatlake_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
MESSAGES = Counter("chatlake_messages_total", "Messages handled", ["direction", "tier"])
RATE_LIMITED = Counter("chatlake_rate_limited_total", "Messages refused by the rate limit")
EVENTS_APPENDED = Counter("chatlake_events_appended_total", "Events appended to the event log")
CHANNEL_REFUSED = Counter(
    "chatlake_channel_webhooks_refused_total",
    "Channel webhooks refused (bad or missing signature, channel not configured or disabled)",
    ["channel", "reason"],
)
CHANNEL_DUPLICATES = Counter(
    "chatlake_channel_duplicate_deliveries_total",
    "Channel deliveries seen before (a provider's retry), not handled again",
    ["channel"],
)
CHANNEL_SENDS = Counter(
    "chatlake_channel_sends_total",
    "Requests to the channels' send APIs, by outcome (sent, retried, dead_letter)",
    ["channel", "outcome"],
)


def metrics_payload(extra: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The process's metrics (all workers' under multiprocess mode), then `extra`'s."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        payload = generate_latest(registry)
    else:
        payload = generate_latest()
    if extra is not None:
        payload += generate_latest(extra)
    return payload, CONTENT_TYPE_LATEST


def ingest_registry(status: dict[str, Any]) -> CollectorRegistry:
    """The ingest lag and throughput (lake.ingest.stream_status) as Prometheus gauges."""
    registry = CollectorRegistry()
    Gauge(
        "chatlake_event_stream_length",
        "Entries in the event streams, i.e. not yet in the lake",
        registry=registry,
    ).set(status["stream_length"])
    Gauge(
        "chatlake_event_stream_pending",
        "Entries delivered to an ingest worker and not yet committed",
        registry=registry,
    ).set(status["pending"])
    version = Gauge(
        "chatlake_ingest_last_version",
        "Last batch version an ingest consumer committed",
        ["consumer"],
        registry=registry,
    )
    rate = Gauge(
        "chatlake_ingest_rows_per_second",
        "Rows per second of the consumer's last batch",
        ["consumer"],
        registry=registry,
    )
    rows = Gauge(
        "chatlake_ingest_rows",
        "Rows a consumer has committed since it started",
        ["consumer"],
        registry=registry,
    )
    for consumer in status["consumers"]:
        name = consumer["consumer"]
        version.labels(name).set(consumer["last_version"])
        rate.labels(name).set(consumer.get("rows_per_s") or 0)
        rows.labels(name).set(consumer.get("rows", 0))
    return registry


@lru_cache(maxsize=1024)
def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The labelled children, looked up once per (method, route, status), not per request."""
    return (
        REQUESTS.labels(method, route, str(status)),
        REQUEST_SECONDS.labels(method, route),
    )


@lru_cache(maxsize=64)
def message_series(direction: str, tier: str) -> Any:
    return MESSAGES.labels(direction, tier)


class RequestContextMiddleware:
    """Request id (from `X-Request-ID` or new), timing, metrics and one access-log line."""

    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log
        self.log = structlog.get_logger("chatlake.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
                break
        request_id = request_id or os.urandom(16).hex()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            counter, histogram = _series(scope["method"], route_path, status)
            counter.inc()
            histogram.observe(elapsed)
            if self.access_log:
                self.log.info(
                    "request",
                    method=scope["method"],
                    path=route_path,  # the template: a path holds conversation and user ids
                    status=status,
                    ms=round(elapsed * 1000, 2),
                )


class BodyLimitMiddleware:
    """413 for bodies over the limit, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    await error_response(400, "bad_request", "invalid Content-Length")(
                        scope, receive, send
                    )
                    return
                if too_big:
                    await self._reject(scope, receive, send)
                    return
                # The server frames the body by Content-Length: it cannot run longer.
                await self.app(scope, receive, send)
                return
        received = 0
        limit = self.max_bytes

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside body parsing, so the error handlers answer 413.
                    raise HTTPException(413, f"the request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"the request body is over the limit of {self.max_bytes} bytes",
        )
        await response(scope, receive, send)
