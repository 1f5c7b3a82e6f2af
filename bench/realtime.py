"""`chatlake bench realtime`: POST /v1/messages under load, as a ratio of two ceilings.

For each worker count it starts, one after the other on free loopback ports:
the bare ASGI echo (the server's limit), the minimal FastAPI + one pipelined Redis round
trip (the stack's limit) and the real API, and drives each from a separate process with
the same request bodies: a few thousand existing conversations of distinct users. wrk
measures throughput when it is installed (`apt-get install wrk`); otherwise the Python
load generator in closed-loop mode does. Then an open-loop run at a fixed rate measures
the real API's latency percentiles. Results are printed and written as JSON.

With `--chain` it measures the reply chain instead: a loopback OpenAI-compatible provider
(bench/provider.py) answers after a fixed delay; at a fixed rate, every message (each one
new, so the response cache never answers) goes through the API to the provider, and the
same provider is also measured directly. The difference is the chain's own overhead: ours,
without the provider's time.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.output import write_results
from chatlake.db.migrate import upgrade
from chatlake.embedded import Services, wait_http_ready
from chatlake.errors import ChatlakeError
from chatlake.settings import Settings
from chatlake.tenants import control_plane
from realtime.engine.flows.engine import sample_flow

BENCH_DIR = Path(__file__).parent
PHRASES = (
    "hello",
    "where is my order?",
    "thanks a lot",
    "I want to change my delivery address",
    "what can you do",
    "bye",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_command(target: str, port: int, workers: int) -> list[str]:
    common = ["--port", str(port), "--workers", str(workers)]
    if target == "full":
        return [sys.executable, "-m", "chatlake", "serve", *common]
    app = "bench.ceilings:echo_app" if target == "echo" else "bench.ceilings:create_stack_app"
    extra = ["--factory"] if target == "stack" else []
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        *extra,
        *common,
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


class Server:
    def __init__(self, target: str, workers: int, env: dict[str, str], log_dir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / f"bench-{target}-{workers}.log", "wb")
        self.process = subprocess.Popen(
            _server_command(target, self.port, workers),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=BENCH_DIR.parent,
        )
        ready = "/readyz" if target == "full" else "/openapi.json" if target == "stack" else "/"
        wait_http_ready(self.url + ready, self.process)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _wrk(url: str, bodies: Path, auth: str, connections: int, duration: float) -> dict[str, Any]:
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_AUTH": auth}
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "5s",
            "-s",
            str(BENCH_DIR / "realtime.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=duration + 60,
        check=False,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise ChatlakeError(f"wrk failed: {result.stderr.strip() or result.stdout.strip()}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    return {
        "client": "wrk",
        "connections": connections,
        "requests": raw["requests"],
        "requests_per_s": round(raw["requests"] / seconds, 1),
        "errors": errors,
        "error_detail": raw["errors"],
        "latency_ms": {k: round(v / 1000, 3) for k, v in raw["latency_us"].items()},
    }


def _loadgen(url: str, bodies: Path, auth: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--bodies",
            str(bodies),
            "--auth",
            auth,
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=BENCH_DIR.parent,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise ChatlakeError(f"load generator failed: {result.stderr.strip()[-2000:]}")
    return dict(json.loads(result.stdout))


def _throughput(
    url: str, bodies: Path, auth: str, connections: int, duration: float, client: str
) -> dict[str, Any]:
    if client == "wrk":
        _wrk(url, bodies, auth, connections, 2)  # warm-up: JIT-free, but caches and pools
        return _wrk(url, bodies, auth, connections, duration)
    result = _loadgen(
        url, bodies, auth, "--mode", "closed", "--connections", str(connections),
        "--duration", str(duration),
    )  # fmt: skip
    statuses = result.pop("statuses")
    result["errors"] = sum(n for status, n in statuses.items() if not status.startswith("2"))
    result["client"] = "python-closed-loop"
    return result


def _seed_conversations(url: str, auth: str, count: int, path: Path) -> None:
    """Start `count` conversations of distinct users; the bench continues them."""
    headers = {"Authorization": auth}
    lines = []
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        for i in range(count):
            user = f"bench-user-{i}"
            response = client.post("/v1/messages", json={"user_id": user, "text": "hello"})
            if response.status_code != 200:
                raise ChatlakeError(f"seeding failed: {response.status_code} {response.text}")
            conversation_id = response.json()["conversation_id"]
            for phrase in random.sample(PHRASES, 3):
                body = {"user_id": user, "conversation_id": conversation_id, "text": phrase}
                lines.append(json.dumps(body))
    random.shuffle(lines)
    path.write_text("\n".join(lines) + "\n")


def _written(results: dict[str, Any], out: str | None, name: str) -> dict[str, Any]:
    results["finished_at"] = datetime.now(UTC).isoformat()
    return write_results(results, out, name)


def _bench_tenant_key(settings: Settings, name: str) -> str:
    """A fresh tenant with a rate limit the bench cannot reach; its API key."""

    async def create(control: Any) -> str:
        _, issued = await control.create_tenant(
            f"{name}-{int(time.time())}", 10_000_000, plan=settings.default_plan, actor="bench"
        )
        return str(issued.api_key)

    async def with_control_plane() -> str:
        async with control_plane(settings, sample_flow()) as control:
            return await create(control)

    return asyncio.run(with_control_plane())


def run(
    settings: Settings,
    duration: float,
    connections: int,
    conversations: int,
    workers: list[int],
    rate: int,
    out: str | None,
    client: str = "auto",
) -> dict[str, Any]:
    """`client`: "wrk", "python" (the closed-loop generator), or "auto" (wrk if installed)."""
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    if client == "wrk" and not shutil.which("wrk"):
        raise ChatlakeError("wrk is not installed (apt-get install wrk), or use --client python")
    services = Services(settings)
    services.start()
    endpoints = services.endpoints()
    upgrade(endpoints.database_url)

    auth = "Bearer " + _bench_tenant_key(settings, "bench")
    # The hot path as measured: auth, rate limit, state, event, reply. Per-request access
    # logging is switched off, as it is behind a load balancer that logs requests itself.
    env = {**os.environ, "BENCH_REDIS_URL": endpoints.redis_url, "CHATLAKE_ACCESS_LOG": "false"}
    log_dir = settings.run_dir
    results: dict[str, Any] = {
        "benchmark": "realtime",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "duration_s": duration,
            "connections": connections,
            "conversations": conversations,
            "workers": workers,
            "fixed_rate": rate,
            "access_log": False,
            "load_generator": "wrk" if client == "wrk" else "python-closed-loop",
        },
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        seeder = Server("full", 1, env, log_dir)
        try:
            _seed_conversations(seeder.url, auth, conversations, bodies)
        finally:
            seeder.stop()
        for count in workers:
            run_result: dict[str, Any] = {}
            for target in ("echo", "stack", "full"):
                server = Server(target, count, env, log_dir)
                try:
                    run_result[target] = _throughput(
                        server.url + "/v1/messages", bodies, auth, connections, duration, client
                    )
                finally:
                    server.stop()
                print(
                    f"workers={count} {target:5s} "
                    f"{run_result[target]['requests_per_s']:>9.1f} req/s  "
                    f"p99 {run_result[target]['latency_ms'].get('p99')} ms",
                    file=sys.stderr,
                )
            full = run_result["full"]["requests_per_s"]
            run_result["full_vs_echo"] = round(full / run_result["echo"]["requests_per_s"], 3)
            run_result["full_vs_stack"] = round(full / run_result["stack"]["requests_per_s"], 3)
            results["runs"][str(count)] = run_result
        if len(workers) > 1:
            base = results["runs"][str(workers[0])]["full"]["requests_per_s"]
            results["full_scaling_vs_first_worker_count"] = {
                str(count): round(results["runs"][str(count)]["full"]["requests_per_s"] / base, 3)
                for count in workers
            }
        server = Server("full", workers[0], env, log_dir)
        try:
            fixed = _loadgen(
                server.url + "/v1/messages", bodies, auth, "--mode", "open", "--rate", str(rate),
                "--duration", str(duration),
            )  # fmt: skip
        finally:
            server.stop()
        fixed["workers"] = workers[0]
        results["fixed_rate"] = fixed
    return _written(results, out, "realtime.json")


def _provider(delay_ms: float, log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    log = open(log_dir / "bench-provider.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.provider", "--port", str(port), "--delay-ms", str(delay_ms)],
        cwd=BENCH_DIR.parent, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http_ready(url + "/stats", process, timeout=30)
    return process, url


def _bodies(path: Path, count: int, make: Any) -> Path:
    path.write_text("\n".join(json.dumps(make(i)) for i in range(count)) + "\n")
    return path


def run_chain(
    settings: Settings, duration: float, rate: int, delay_ms: float, out: str | None
) -> dict[str, Any]:
    """The realtime path through the reply chain, minus the provider's own time."""
    services = Services(settings)
    services.start()
    upgrade(services.endpoints().database_url)

    auth = "Bearer " + _bench_tenant_key(settings, "bench-chain")
    env = {**os.environ, "CHATLAKE_ACCESS_LOG": "false"}
    log_dir = settings.run_dir
    total = int(rate * duration) + 64  # + the load generator's warm-up requests
    provider, provider_url = _provider(delay_ms, log_dir)
    results: dict[str, Any] = {
        "benchmark": "realtime-chain",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {"duration_s": duration, "fixed_rate": rate, "provider_delay_ms": delay_ms,
                   "workers": 1, "access_log": False},
    }  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # Every message opens a new conversation with a new question: no cache hits.
            api_bodies = _bodies(
                Path(tmp) / "api.jsonl",
                total,
                lambda i: {
                    "user_id": f"chain-user-{i}",
                    "text": f"zxqv question number {i} for the model",
                },
            )
            direct_bodies = _bodies(
                Path(tmp) / "direct.jsonl",
                total,
                lambda i: {
                    "model": "bench-llm",
                    "messages": [{"role": "user", "content": f"q {i}"}],
                },
            )
            results["provider_direct"] = _loadgen(
                provider_url + "/v1/chat/completions", direct_bodies, "", "--mode", "open",
                "--rate", str(rate), "--duration", str(duration), "--sequential",
            )  # fmt: skip
            server = Server("full", 1, env, log_dir)
            try:
                chain = {
                    "tiers": [
                        {
                            "provider": "openai_compatible",
                            "model": "bench-llm",
                            "base_url": provider_url + "/v1",
                            "api_key": "sk-bench",
                        }
                    ]
                }
                put = httpx.put(server.url + "/v1/model-chain", json=chain,
                                headers={"Authorization": auth}, timeout=10)  # fmt: skip
                if put.status_code != 200:
                    raise ChatlakeError(f"setting the chain failed: {put.status_code} {put.text}")
                calls_before = httpx.get(provider_url + "/stats").json()["calls"]
                results["api_with_chain"] = _loadgen(
                    server.url + "/v1/messages", api_bodies, auth, "--mode", "open",
                    "--rate", str(rate), "--duration", str(duration), "--sequential",
                )  # fmt: skip
                calls = httpx.get(provider_url + "/stats").json()["calls"] - calls_before
            finally:
                server.stop()
    finally:
        provider.terminate()
        provider.wait(timeout=10)
    api, direct = results["api_with_chain"], results["provider_direct"]
    results["messages"] = api["statuses"].get("200", 0)
    results["provider_calls"] = calls  # the measured messages + the 32 warm-up ones
    results["every_message_reached_the_provider"] = calls >= results["messages"] + 32
    results["chain_overhead_ms"] = {
        q: round(api["latency_ms"][q] - direct["latency_ms"][q], 3)
        for q in ("p50", "p95", "p99")
        if q in api["latency_ms"] and q in direct["latency_ms"]
    }
    results["provider_share_of_latency_p50"] = round(
        direct["latency_ms"]["p50"] / api["latency_ms"]["p50"], 3
    )
    return _written(results, out, "realtime-chain.json")
