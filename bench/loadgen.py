"""A load generator that runs in its own process: `python -m bench.loadgen …` prints JSON.

* `open` mode sends at a fixed rate whatever the server does, and measures each latency from
  the moment the request was due, so a slow server cannot hide its queueing (no
  coordinated omission).
* `closed` mode keeps N requests in flight, as wrk does; it is the fallback when wrk is not
  installed (it saturates sooner than wrk, so prefer wrk for throughput ceilings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": at(0.50), "p90": at(0.90), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)}


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> int:
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        return response.status


async def run_open(
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    rate: float,
    duration: float,
    sequential: bool = False,
) -> dict[str, Any]:
    """`sequential`: each body once, in order (bodies that must not repeat), else random."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm the connection pool so the first second does not measure TCP handshakes.
        warm = bodies[-32:] if sequential else [bodies[0]] * 32
        await asyncio.gather(*(_post(session, url, body, headers) for body in warm))
        tasks: list[asyncio.Task[None]] = []

        async def one(due: float, body: bytes) -> None:
            try:
                status = str(await _post(session, url, body, headers))
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append((time.perf_counter() - due) * 1000)

        start = time.perf_counter()
        total = int(rate * duration)
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = bodies[i % len(bodies)] if sequential else random.choice(bodies)
            tasks.append(asyncio.create_task(one(due, body)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {
        "mode": "open",
        "target_rate": rate,
        "requests": total,
        "achieved_rate": round(total / elapsed, 1),
        "statuses": statuses,
        "latency_ms": percentiles(latencies),
    }


async def run_closed(
    url: str, bodies: list[bytes], headers: dict[str, str], connections: int, duration: float
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    status = str(await _post(session, url, random.choice(bodies), headers))
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append((time.perf_counter() - sent) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return {
        "mode": "closed",
        "connections": connections,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "statuses": statuses,
        "latency_ms": percentiles(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, type=Path, help="one JSON body per line")
    parser.add_argument("--auth", default="")
    parser.add_argument("--mode", choices=("open", "closed"), default="open")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--sequential", action="store_true", help="open mode: bodies in order")
    args = parser.parse_args()
    bodies = [line.encode() for line in args.bodies.read_text().splitlines() if line]
    headers = {"Content-Type": "application/json"}
    if args.auth:
        headers["Authorization"] = args.auth
    if args.mode == "open":
        coro = run_open(args.url, bodies, headers, args.rate, args.duration, args.sequential)
    else:
        coro = run_closed(args.url, bodies, headers, args.connections, args.duration)
    print(json.dumps(uvloop.run(coro)))


if __name__ == "__main__":
    main()
