"""`chatlake bench startup`: what one API process costs to start and to keep, as a ratio of
the minimal FastAPI + Redis process (bench/ceilings.py's stack app) started the same way.

Each run starts a server on a free loopback port (one worker, as `chatlake serve` does),
times it from spawn until it answers, sends it a few requests, and reads its resident
memory (VmRSS) from /proc. The runs alternate between the two so that the machine's noise
falls on both; medians are reported. The real API's figure is what the layering keeps
down: it imports no lake, warehouse or pipeline library, and loads scikit-learn only when
a tenant trains (tests/unit/test_layering.py).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.output import write_results
from bench.realtime import Server
from chatlake.db.migrate import upgrade
from chatlake.embedded import Services
from chatlake.settings import Settings

TARGETS = ("stack", "full")  # the ceiling first, then the real API


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _one(target: str, env: dict[str, str], log_dir: Path, requests: int) -> dict[str, float]:
    started = time.perf_counter()
    server = Server(target, 1, env, log_dir)  # returns once the server answers
    try:
        ready_s = time.perf_counter() - started
        path = "/readyz" if target == "full" else "/openapi.json"
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(requests):
                client.get(path).raise_for_status()
        time.sleep(0.5)  # let the allocator settle after the requests
        return {"ready_s": ready_s, "rss_mib": _rss_mib(server.process.pid)}
    finally:
        server.stop()


def run(settings: Settings, runs: int, out: str | None, requests: int = 20) -> dict[str, Any]:
    services = Services(settings)
    services.start()
    endpoints = services.endpoints()
    upgrade(endpoints.database_url)
    env = {**os.environ, "BENCH_REDIS_URL": endpoints.redis_url, "CHATLAKE_ACCESS_LOG": "false"}
    samples: dict[str, list[dict[str, float]]] = {target: [] for target in TARGETS}
    for index in range(runs):
        for target in TARGETS:
            sample = _one(target, env, settings.run_dir, requests)
            samples[target].append(sample)
            print(f"run {index + 1}/{runs} {target:5s} ready in {sample['ready_s']:.2f} s, "
                  f"{sample['rss_mib']:.1f} MiB", file=sys.stderr)  # fmt: skip
    summary: dict[str, Any] = {}
    for target in TARGETS:
        summary[target] = {
            "ready_s_median": round(statistics.median(s["ready_s"] for s in samples[target]), 3),
            "rss_mib_median": round(statistics.median(s["rss_mib"] for s in samples[target]), 1),
            "ready_s": [round(s["ready_s"], 3) for s in samples[target]],
            "rss_mib": [round(s["rss_mib"], 1) for s in samples[target]],
        }
    results: dict[str, Any] = {
        "benchmark": "startup",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {"runs": runs, "requests_before_rss": requests, "workers": 1},
        "ceiling": "minimal FastAPI app with a Redis client (bench/ceilings.py), same server",
        **summary,
        "full_vs_stack": {
            "ready_s": round(
                summary["full"]["ready_s_median"] / summary["stack"]["ready_s_median"], 2
            ),
            "rss_mib": round(
                summary["full"]["rss_mib_median"] / summary["stack"]["rss_mib_median"], 2
            ),
        },
    }
    return write_results(results, out, "startup.json")
