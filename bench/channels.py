"""`chatlake bench channels`: a channel's webhook-to-outbound-send latency and throughput,
as ratios of ceilings measured in the same run.

The real API (one worker, `chatlake serve`) takes signed WhatsApp Cloud API webhooks; a
loopback Cloud API (bench/channel_provider.py) records when each reply arrives. Every
message comes from a sender of its own (a new conversation each time, as a first contact
is), so each measures the whole path: signature, parse, deduplication claim, identity
lookup, the engine and the Redis record, rendering, and the send through the channel's
client with its rate limiter.

- Latency, open loop at `--rate` for `--duration`: from the moment the webhook was sent
  to the moment the reply reached the provider. The ceiling is what the path is made of,
  measured alone at the same rate against the same servers: `POST /v1/messages` (the
  engine path) plus a direct request to the loopback provider (the send).
- Throughput, closed loop with `--concurrency` webhooks in flight for `--duration`: replies
  that reached the provider per second, against `POST /v1/messages` answered per second
  at the same concurrency.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
import numpy as np

from bench.output import write_results
from bench.realtime import BENCH_DIR, Server, _bench_tenant_key, _free_port
from bench.webhooks import WA_PHONE_ID, meta_headers, whatsapp
from chatlake.db.migrate import upgrade
from chatlake.embedded import Services, wait_http_ready
from chatlake.errors import ChatlakeError
from chatlake.settings import Settings

APP_SECRET = "bench-app-secret"
PHASES = {"warm": 1, "latency": 2, "throughput": 3}  # each phase's senders apart


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values) * 1000
    return {
        q: round(float(np.percentile(array, p)), 3)
        for q, p in (("p50", 50), ("p95", 95), ("p99", 99))
    }


def _webhook(phase: str, i: int) -> tuple[str, bytes, dict[str, str]]:
    """A signed webhook of one text message from a sender of its own; the sender's id."""
    sender = f"1{PHASES[phase]}{i:09d}"
    message = {"id": f"wamid.{phase}.{i}", "type": "text", "text": {"body": "hello"}}
    raw = json.dumps(whatsapp(message, user=sender)).encode()
    return sender, raw, meta_headers(APP_SECRET, raw)


async def _open_loop(
    url: str, requests: list[tuple[str, bytes, dict[str, str]]], rate: float
) -> tuple[dict[str, float], dict[str, int], list[float]]:
    """Send at a fixed rate; when each was sent, the statuses, each response's latency."""
    sent: dict[str, float] = {}
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(key: str, raw: bytes, headers: dict[str, str]) -> None:
            started = time.time()
            sent[key] = started
            try:
                async with session.post(url, data=raw, headers=headers) as response:
                    await response.read()
                    status = str(response.status)
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append(time.time() - started)

        start = time.perf_counter()
        tasks = []
        for i, (key, raw, headers) in enumerate(requests):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(key, raw, headers)))
        await asyncio.gather(*tasks)
    return sent, statuses, latencies


async def _closed_loop(url: str, make: Any, concurrency: int, duration: float) -> dict[str, Any]:
    """`concurrency` requests in flight for `duration` seconds; how many were answered."""
    counter = iter(range(10**9))
    answered: dict[str, int] = {}
    deadline = time.perf_counter() + duration
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                _, raw, headers = make(next(counter))
                async with session.post(url, data=raw, headers=headers) as response:
                    await response.read()
                    answered[str(response.status)] = answered.get(str(response.status), 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"statuses": answered, "elapsed_s": round(elapsed, 3), "sent": next(counter)}


def _wait_arrivals(provider: str, expected: int, timeout_s: float = 60.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        arrivals: dict[str, float] = httpx.get(provider + "/arrivals", timeout=30).json()
        if len(arrivals) >= expected or time.monotonic() > deadline:
            return arrivals
        time.sleep(0.2)


def run(
    settings: Settings, duration: float, rate: float, concurrency: int, out: str | None
) -> dict[str, Any]:
    services = Services(settings)
    services.start()
    upgrade(services.endpoints().database_url)
    auth = {"Authorization": "Bearer " + _bench_tenant_key(settings, "bench-channels")}
    log_dir = settings.run_dir
    port = _free_port()
    provider_log = open(log_dir / "bench-channel-provider.log", "wb")
    provider_process = subprocess.Popen(
        [sys.executable, "-m", "bench.channel_provider", "--port", str(port)],
        cwd=BENCH_DIR.parent,
        stdout=provider_log,
        stderr=subprocess.STDOUT,
    )
    provider = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {
        "benchmark": "channels",
        "channel": "whatsapp",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "duration_s": duration,
            "rate": rate,
            "concurrency": concurrency,
            "workers": 1,
            "channel_rate_limit_per_s": 1000,
        },
    }
    server = None
    try:
        wait_http_ready(provider + "/stats", provider_process, timeout=30)
        env = {**os.environ, "CHATLAKE_ACCESS_LOG": "false"}
        server = Server("full", 1, env, log_dir)
        configured = httpx.put(
            server.url + "/v1/channels/whatsapp",
            headers=auth,
            timeout=30,
            json={
                "secrets": {
                    "app_secret": APP_SECRET,
                    "access_token": "bench-token",
                    "phone_number_id": WA_PHONE_ID,
                },
                "api_base_url": provider,
                "rate_limit_per_s": 1000,
            },
        )
        if configured.status_code != 200:
            raise ChatlakeError(f"configuring the channel failed: {configured.text}")
        tenant_id = configured.json()["webhook_url"].rsplit("/", 1)[1]
        webhook = f"{server.url}/v1/channels/whatsapp/{tenant_id}"
        count = max(1, int(rate * duration))

        # warm-up: connections, caches, the first conversation's code paths
        warm = [_webhook("warm", i) for i in range(min(50, count))]
        asyncio.run(_open_loop(webhook, warm, rate))
        _wait_arrivals(provider, len(warm))

        requests = [_webhook("latency", i) for i in range(count)]
        sent, statuses, acks = asyncio.run(_open_loop(webhook, requests, rate))
        arrivals = _wait_arrivals(provider, len(warm) + count)
        end_to_end = [arrivals[k] - sent[k] for k in sent if k in arrivals]
        results["webhook_to_send"] = {
            "messages": count,
            "statuses": statuses,
            "replies_arrived": len(end_to_end),
            "latency_ms": _percentiles(end_to_end),
            "webhook_ack_ms": _percentiles(acks),
        }
        api_requests = [
            (
                str(i),
                json.dumps(
                    {"user_id": f"bench-api-{i}-{time.time_ns()}", "text": "hello"}
                ).encode(),
                {**auth, "Content-Type": "application/json"},
            )
            for i in range(count)
        ]
        _, api_statuses, api_latency = asyncio.run(
            _open_loop(server.url + "/v1/messages", api_requests, rate)
        )
        results["ceiling_api_messages"] = {
            "statuses": api_statuses,
            "latency_ms": _percentiles(api_latency),
        }
        direct = [
            (
                f"direct-{i}",
                json.dumps(
                    {
                        "messaging_product": "whatsapp",
                        "to": f"direct-{i}",
                        "type": "text",
                        "text": {"body": "hi"},
                    }
                ).encode(),
                {"Content-Type": "application/json"},
            )
            for i in range(count)
        ]
        _, direct_statuses, direct_latency = asyncio.run(
            _open_loop(f"{provider}/v21.0/{WA_PHONE_ID}/messages", direct, rate)
        )
        results["ceiling_provider_direct"] = {
            "statuses": direct_statuses,
            "latency_ms": _percentiles(direct_latency),
        }

        before = httpx.get(provider + "/stats").json()["received"]
        throughput = asyncio.run(
            _closed_loop(webhook, lambda i: _webhook("throughput", i), concurrency, duration)
        )
        delivered = httpx.get(provider + "/stats").json()["received"] - before
        settle = time.monotonic() + 30
        while delivered < throughput["statuses"].get("200", 0) and time.monotonic() < settle:
            time.sleep(0.2)
            delivered = httpx.get(provider + "/stats").json()["received"] - before
        throughput["replies_delivered"] = delivered
        throughput["replies_per_s"] = round(delivered / throughput["elapsed_s"], 1)
        results["throughput"] = throughput

        def api_message(i: int) -> tuple[str, bytes, dict[str, str]]:
            body = {"user_id": f"bench-api-tp-{i}-{time.time_ns()}", "text": "hello"}
            return str(i), json.dumps(body).encode(), {**auth, "Content-Type": "application/json"}

        api_throughput = asyncio.run(
            _closed_loop(server.url + "/v1/messages", api_message, concurrency, duration)
        )
        api_throughput["messages_per_s"] = round(
            api_throughput["statuses"].get("200", 0) / api_throughput["elapsed_s"], 1
        )
        results["ceiling_api_throughput"] = api_throughput
    finally:
        if server is not None:
            server.stop()
        provider_process.terminate()
        provider_process.wait(timeout=10)
        provider_log.close()
    channel, api, direct_ms = (
        results["webhook_to_send"]["latency_ms"],
        results["ceiling_api_messages"]["latency_ms"],
        results["ceiling_provider_direct"]["latency_ms"],
    )
    if channel and api and direct_ms:
        ceiling = api["p50"] + direct_ms["p50"]
        results["latency_p50_vs_ceiling"] = round(channel["p50"] / ceiling, 3)
        results["channel_overhead_p50_ms"] = round(channel["p50"] - ceiling, 3)
    if api_throughput["messages_per_s"]:
        results["throughput_vs_ceiling"] = round(
            results["throughput"]["replies_per_s"] / api_throughput["messages_per_s"], 3
        )
    results["finished_at"] = datetime.now(UTC).isoformat()
    return write_results(results, out, "channels.json")
