"""`chatlake bench chaos`: steady traffic while the platform is hurt, then what was lost.

In a temporary `$CHATLAKE_HOME` it starts `chatlake up --no-dagster --no-dashboards
--no-seed` as a process of its own, creates a few tenants and drives `POST /v1/messages`
open loop (several tenants, several channels) from a thread while it, in turn:

- kills -9 the API, the ingest worker (the processes `up` runs under its guard), Redis and
  PostgreSQL (their pids from `run/up.json` and `run/services.json`), and measures how
  long until the platform answers again (`/readyz` and a probe message answered 200; for
  the ingest worker, until a probe message sent after the kill is in bronze). A component
  `up` does not bring back within `restart_bound_s` is restarted by the bench (`chatlake
  services start`, `chatlake serve`, `chatlake ingest`) and reported (`restarted_by`);
- runs an erasure (through the API) and a retention pass (`chatlake lake retention`, with a
  tenant whose retention expires its data) while the ingest worker writes;
- runs two `chatlake pipeline run`s at once.

Then it runs the cross-tenant and forged-webhook suites (bench/probes.py), stops the
traffic, waits for the ingest worker to drain the stream, and counts from what the
clients were answered and what bronze holds: acknowledged messages (a 200 with a
message_id, and its replies) not in bronze (`lost`), event ids in bronze more than once
(`duplicated`), and per fault the requests answered 5xx other than a 503 with
Retry-After. Times are reported, never judged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
import pyarrow.compute as pc
from deltalake import DeltaTable

from bench.output import write_results
from bench.probes import (
    configure_channels,
    cross_tenant,
    forged_webhooks,
    lake_verdict,
    markers_of,
    seed_tenant_a,
)
from bench.realtime import _free_port
from bench.webhooks import ChannelServer
from chatlake.errors import ChatlakeError
from chatlake.settings import Settings
from lake.datasets import arrow_dataset

JsonDict = dict[str, Any]
BENCH_DIR = Path(__file__).parent
PHRASES = ("hello", "where is my order?", "thanks a lot", "what can you do", "bye")
FAULTS = ("api", "ingest", "redis", "postgres", "erasure", "retention", "pipelines")
CHANNELS = ("api", "web", "whatsapp", "slack")  # the `channel` each user's messages carry
EXTERNAL = (
    "CHATLAKE_DATABASE_URL",
    "CHATLAKE_APP_DATABASE_URL",
    "CHATLAKE_REDIS_URL",
    "CHATLAKE_LAKE_URI",
    "CHATLAKE_WAREHOUSE_PATH",
    "CHATLAKE_DAGSTER_URL",
    "CHATLAKE_EVENT_BUS",
    "CHATLAKE_KAFKA_BOOTSTRAP",
)


@dataclass
class Profile:
    """How long and how hard: the default run (~5 min here, most of it the two pipeline
    runs) or `--quick` (about a minute, without them)."""

    rate: float
    tenants: int
    users_per_tenant: int
    steady_s: float  # traffic alone before the first fault and after each one
    restart_bound_s: float  # how long `up` gets to bring a killed component back
    erasure_wait_s: float = 240  # how long the end waits for the erasure's outcome
    faults: tuple[str, ...] = FAULTS


DEFAULT = Profile(rate=200, tenants=3, users_per_tenant=150, steady_s=8, restart_bound_s=60)
QUICK = Profile(
    rate=100,
    tenants=3,
    users_per_tenant=60,
    steady_s=2,
    restart_bound_s=45,
    # the erasure rebuilds the warehouse (a pipeline run): on a loaded machine it can
    # still run when the other faults are done; wait for it, bounded, as the full run does
    erasure_wait_s=180,
    faults=tuple(f for f in FAULTS if f != "pipelines"),  # two pipeline runs take minutes here
)


@dataclass
class Answer:
    at: float  # when it was sent, seconds since the traffic started
    tenant: str
    status: int | str  # the HTTP status, or the client error's name
    retry_after: bool
    message_id: str | None = None
    reply_ids: list[str] = field(default_factory=list)


class Traffic:
    """Open-loop `POST /v1/messages` at `rate` from a thread of its own, until stopped;
    every answer kept (what was acknowledged is what the lake must hold)."""

    def __init__(self, api: str, tenants: list[JsonDict], users: int, rate: float) -> None:
        self.url = api + "/v1/messages"
        self.rate = rate
        run = uuid.uuid4().hex[:6]
        self.plan = [
            (t["tenant_id"], t["api_key"], f"u{run}-{i}", CHANNELS[i % len(CHANNELS)])
            for i in range(users)
            for t in tenants
        ]
        self.answers: list[Answer] = []
        self.started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def now(self) -> float:
        return time.monotonic() - self.started

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            while not self._stop.is_set():
                delay = self.started + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self._one(session, *self.plan[i % len(self.plan)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.gather(*tasks)

    async def _one(
        self, session: aiohttp.ClientSession, tenant: str, key: str, user: str, channel: str
    ) -> None:
        at = self.now()
        body = {"user_id": user, "text": random.choice(PHRASES), "channel": channel}
        headers = {"Authorization": f"Bearer {key}"}
        try:
            async with session.post(self.url, json=body, headers=headers) as response:
                raw = await response.read()
                answer = Answer(at, tenant, response.status, "Retry-After" in response.headers)
                if response.status == 200:
                    data = json.loads(raw)
                    answer.message_id = data.get("message_id")
                    answer.reply_ids = [r["message_id"] for r in data.get("replies", [])]
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            answer = Answer(at, tenant, type(exc).__name__, False)
        self.answers.append(answer)


def _auth(tenant: JsonDict) -> dict[str, str]:
    """The headers that call the API as `tenant` (with its API key)."""
    return {"Authorization": f"Bearer {tenant['api_key']}"}


def _progress(what: str) -> None:
    print(f"bench chaos: {what}", file=sys.stderr, flush=True)


class Platform:
    """`chatlake up` in a temporary home, and the means to hurt it."""

    def __init__(self, home: Path, profile: Profile) -> None:
        self.home = home
        self.profile = profile
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
        self.env.update(
            CHATLAKE_HOME=str(home), CHATLAKE_ACCESS_LOG="false", CHATLAKE_PRIVATE_URLS="true"
        )
        self.settings = Settings(
            home=home,
            database_url=None,
            app_database_url=None,
            redis_url=None,
            lake_uri=None,
            warehouse_path=None,
        )
        self.up: subprocess.Popen[bytes] | None = None
        self.ours: list[subprocess.Popen[bytes]] = []  # what the bench restarted itself
        self.log = open(home / "bench-up.log", "ab")

    def chatlake(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "chatlake", *args]

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        """`chatlake <args>` started in the background, in a session of its own, its
        output in the bench's log."""
        return subprocess.Popen(
            self.chatlake(*args),
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=BENCH_DIR.parent,
            start_new_session=True,
        )

    def command(self, *args: str, timeout: float = 600) -> JsonDict:
        """`chatlake <args>` run to its end: its exit code, how long it took, and the tail
        of its stderr when it failed."""
        started = time.monotonic()
        try:
            done = subprocess.run(
                self.chatlake(*args),
                env=self.env,
                cwd=BENCH_DIR.parent,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"exit_code": None, "error": "timed out", "seconds": timeout}
        result: JsonDict = {
            "exit_code": done.returncode,
            "seconds": round(time.monotonic() - started, 2),
        }
        if done.returncode != 0:
            result["stderr_tail"] = done.stderr.strip()[-600:]
        return result

    def start(self) -> None:
        self.up = self.spawn(
            "up", "--no-dagster", "--no-dashboards", "--no-seed", "--port", str(self.port)
        )
        deadline = time.monotonic() + 300
        while not self.ready():
            if self.up.poll() is not None:
                raise ChatlakeError(f"`chatlake up` exited; see {self.home / 'bench-up.log'}")
            if time.monotonic() > deadline:
                raise ChatlakeError("`chatlake up` did not become ready in 300 s")
            time.sleep(0.5)

    def ready(self) -> bool:
        try:
            return httpx.get(self.api + "/readyz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.secret('admin_token')}"}

    def create_tenant(self, name: str, retention_days: int = 90) -> JsonDict:
        created = httpx.post(
            self.api + "/v1/tenants",
            headers=self.admin(),
            timeout=30,
            json={
                "name": name,
                "rate_limit_per_minute": 10_000_000,
                "retention_days": retention_days,
            },
        )
        if created.status_code != 201:
            raise ChatlakeError(f"creating a tenant failed: {created.text}")
        return dict(created.json())

    def child_pid(self, name: str) -> int | None:
        """The pid of `up`'s child `name` (the command under its guard), else None."""
        word = {"api": "serve", "ingest": "ingest"}[name]
        assert self.up is not None
        try:
            tree = psutil.Process(self.up.pid).children(recursive=True)
        except psutil.Error:
            return None
        for process in tree:
            with contextlib.suppress(psutil.Error):
                line = process.cmdline()
                if "cli.guard" not in line and word in line and "chatlake" in line:
                    return int(process.pid)
        return None

    def store_pid(self, name: str) -> int | None:
        try:
            entry = json.loads((self.home / "run" / "services.json").read_text())[name]
        except (OSError, ValueError, KeyError):
            return None
        pid = entry.get("pid")
        return int(pid) if pid and psutil.pid_exists(int(pid)) else None

    def pid(self, component: str) -> int | None:
        if component in ("redis", "postgres"):
            return self.store_pid(component)
        return self.child_pid(component)

    def restart_ourselves(self, component: str) -> None:
        """What `up` did not bring back, started by the bench (stopped with it)."""
        if component in ("redis", "postgres"):
            self.command("services", "start", timeout=120)
            return
        args = ("serve", "--port", str(self.port)) if component == "api" else ("ingest",)
        self.ours.append(self.spawn(*args))

    def stop(self) -> None:
        for process in self.ours:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)  # up stops its children, then the stores
            try:
                self.up.wait(timeout=90)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.up.pid, signal.SIGKILL)
        self.command("services", "stop", timeout=120)
        self.log.close()


class Probe:
    """One message from a tenant of the bench's own, to see whether the platform answers
    (and, once the ingest worker is back, whether it lands in bronze)."""

    def __init__(self, api: str, tenant: JsonDict, lake: str) -> None:
        self.url = api + "/v1/messages"
        self.headers = _auth(tenant)
        self.tenant_id = tenant["tenant_id"]
        self.lake = lake
        self.acknowledged: list[str] = []  # every id the probe was answered with

    def send(self) -> str | None:
        try:
            answer = httpx.post(
                self.url,
                headers=self.headers,
                timeout=5,
                json={"user_id": f"probe-{uuid.uuid4().hex[:8]}", "text": "hi"},
            )
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        body = answer.json()
        self.acknowledged += [body["message_id"], *(r["message_id"] for r in body["replies"])]
        return str(body["message_id"])

    def in_bronze(self, event_id: str) -> bool:
        try:
            table = DeltaTable(f"{self.lake}/bronze/messages")
            found = arrow_dataset(table).to_table(
                columns=["event_id"],
                filter=(pc.field("tenant_id") == self.tenant_id)
                & (pc.field("event_id") == event_id),
            )
        except Exception:  # a table being rewritten: look again
            return False
        return bool(found.num_rows)


def _kill(platform_: Platform, probe: Probe, component: str) -> JsonDict:
    """kill -9 one component; how long until the platform answered again, and who
    restarted it."""
    pid = platform_.pid(component)
    if pid is None:
        return {"error": f"no running {component} found"}
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    bound = platform_.profile.restart_bound_s
    restarted_by: str | None = None
    new_pid: int | None = None
    marker: str | None = None
    recovered_s: float | None = None
    while time.monotonic() - killed_at < 2 * bound:
        current = platform_.pid(component)
        if current is not None and current != pid and new_pid is None:
            new_pid, restarted_by = current, restarted_by or "up"
        if restarted_by is None and time.monotonic() - killed_at > bound:
            platform_.restart_ourselves(component)
            restarted_by = "bench"
        back = new_pid is not None or restarted_by == "bench"
        if component == "ingest":
            # the API never stopped: recovered once a message sent after the kill is in bronze
            marker = marker or probe.send()
            if marker and back and probe.in_bronze(marker):
                recovered_s = time.monotonic() - killed_at
                break
        elif back and platform_.ready() and probe.send():
            recovered_s = time.monotonic() - killed_at
            break
        time.sleep(0.2)
    if restarted_by == "bench" and new_pid is None:
        new_pid = platform_.pid(component)
    return {
        "pid_killed": pid,
        "new_pid": new_pid,
        "recovered": recovered_s is not None,
        "recovery_s": None if recovered_s is None else round(recovered_s, 2),
        "restarted_by": restarted_by,
        "up_restarted": restarted_by == "up",
    }


def _erasure(platform_: Platform, tenant: JsonDict, subject: str) -> JsonDict:
    """An erasure request through the API; it runs (a process the API starts, with its
    warehouse rebuild) while the other faults and the ingest worker go on."""
    asked = httpx.post(
        platform_.api + "/v1/compliance/erasure-requests",
        headers=_auth(tenant),
        json={"user_id": subject},
        timeout=30,
    )
    if asked.status_code != 202:
        return {"error": f"{asked.status_code} {asked.text}"}
    return {"request_id": asked.json()["request_id"], "asked_at": time.monotonic()}


def _erasure_outcome(
    platform_: Platform, tenant: JsonDict, entry: JsonDict, bound_s: float
) -> None:
    """The erasure's status once it ended, or as it is after `bound_s` more seconds."""
    if "request_id" not in entry:
        return
    url = f"{platform_.api}/v1/compliance/erasure-requests/{entry['request_id']}"
    headers = _auth(tenant)
    deadline = time.monotonic() + bound_s
    status = "unknown"
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            status = httpx.get(url, headers=headers, timeout=10).json()["status"]
        if status not in ("queued", "running", "unknown") or time.monotonic() > deadline:
            break
        time.sleep(1)
    entry["status"] = status
    entry["seconds_until_reported"] = round(time.monotonic() - entry.pop("asked_at"), 2)


def _retention(platform_: Platform) -> JsonDict:
    """A retention pass that expires the retention tenant's messages (its retention is one
    day; the pass counts from three days ahead) while the other tenants' stay."""
    ahead = (date.today() + timedelta(days=3)).isoformat()
    return platform_.command("lake", "retention", "--today", ahead)


def _pipelines(platform_: Platform) -> JsonDict:
    """Two `chatlake pipeline run`s at once."""
    runs: list[JsonDict] = [{}, {}]

    def one(i: int) -> None:
        runs[i] = platform_.command("pipeline", "run", "--no-retrain", "--no-bill")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"runs": runs, "both_succeeded": all(r.get("exit_code") == 0 for r in runs)}


def _window(answers: list[Answer], start: float, end: float) -> JsonDict:
    """What the clients were answered for the requests sent in [start, end)."""
    inside = [a for a in answers if start <= a.at < end]
    statuses = Counter(str(a.status) for a in inside)
    bad = [
        a
        for a in inside
        if isinstance(a.status, int) and a.status >= 500 and not (a.status == 503 and a.retry_after)
    ]
    return {
        "sent": len(inside),
        "acknowledged": sum(1 for a in inside if a.message_id),
        "statuses": dict(sorted(statuses.items())),
        "unavailable_503_retry_after": sum(1 for a in inside if a.status == 503 and a.retry_after),
        "bad_5xx": len(bad),
        "bad_5xx_statuses": dict(Counter(str(a.status) for a in bad)),
        "connection_errors": sum(1 for a in inside if isinstance(a.status, str)),
    }


def _drain(platform_: Platform, bound_s: float) -> JsonDict:
    """Until the ingest worker has taken every entry of the stream into the lake."""
    from chatlake.embedded import Services
    from chatlake.keyspace import redis_sync_client
    from chatlake.streams import stream_status

    started = time.monotonic()
    last: JsonDict = {}
    while time.monotonic() - started < bound_s:
        try:
            redis = redis_sync_client(Services(platform_.settings).endpoints().redis_url)
            try:
                last = stream_status(redis)
            finally:
                redis.close()
            if last["stream_length"] == 0 and last["pending"] == 0:
                return {"drained": True, "seconds": round(time.monotonic() - started, 2)}
        except Exception as exc:  # a store coming back: look again
            last = {"error": str(exc)}
        time.sleep(0.5)
    return {
        "drained": False,
        "seconds": round(bound_s, 2),
        "left": {k: last.get(k) for k in ("stream_length", "pending", "error")},
    }


def _bronze(lake: str, tenants: list[str]) -> Any:
    table = DeltaTable(f"{lake}/bronze/messages")
    return (
        arrow_dataset(table)
        .to_table(
            columns=["event_id", "tenant_id", "channel", "direction", "user_id"],
            filter=pc.field("tenant_id").isin(tenants),
        )
        .to_pylist()
    )


def run(
    quick: bool, out: str | None, faults: list[str] | None = None, keep_home: bool = False
) -> JsonDict:
    profile = QUICK if quick else DEFAULT
    if faults is not None:
        unknown = sorted(set(faults) - set(FAULTS))
        if unknown:
            raise ChatlakeError(f"unknown faults {unknown}; choose from {', '.join(FAULTS)}")
        profile = Profile(**{**profile.__dict__, "faults": tuple(faults)})
    home = Path(tempfile.mkdtemp(prefix="chatlake-bench-chaos-"))
    platform_ = Platform(home, profile)
    provider = ChannelServer()
    results: JsonDict = {
        "benchmark": "chaos",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "quick": quick,
            "rate": profile.rate,
            "tenants": profile.tenants,
            "users": profile.tenants * profile.users_per_tenant,
            "channels": CHANNELS,
            "steady_s": profile.steady_s,
            "restart_bound_s": profile.restart_bound_s,
            "faults": list(profile.faults),
            "home": str(home),
        },
    }
    traffic: Traffic | None = None
    try:
        _progress(f"starting `chatlake up` in {home}")
        platform_.start()
        tenants = [platform_.create_tenant(f"chaos-{i}") for i in range(profile.tenants)]
        probe_tenant = platform_.create_tenant("chaos-probe")
        retention_tenant = platform_.create_tenant("chaos-retention", retention_days=1)
        webhook_tenant = platform_.create_tenant("chaos-webhooks")
        b_tenant = platform_.create_tenant("chaos-other")
        probe = Probe(platform_.api, probe_tenant, platform_.settings.lake_root)
        a, b = tenants[0], b_tenant
        a_headers = _auth(a)
        b_headers = _auth(b)
        a_ids = seed_tenant_a(platform_.api, a_headers, uuid.uuid4().hex[:12])
        a_ids["tenant_id"] = a["tenant_id"]
        configure_channels(platform_.api, _auth(webhook_tenant), provider)
        subject = f"erase-me-{uuid.uuid4().hex[:6]}"
        for tenant, user in ((a, subject), (retention_tenant, "expires")):
            for _ in range(3):
                httpx.post(
                    platform_.api + "/v1/messages",
                    timeout=30,
                    headers=_auth(tenant),
                    json={"user_id": user, "text": "remember me"},
                )

        traffic = Traffic(platform_.api, tenants, profile.users_per_tenant, profile.rate)
        traffic.start()
        time.sleep(profile.steady_s)
        report: list[JsonDict] = [{"fault": "steady", "start": 0.0}]
        for fault in profile.faults:
            start = traffic.now()
            entry: JsonDict = {"fault": fault, "start": round(start, 2)}
            _progress(f"{fault} at {start:.0f} s")
            if fault in ("api", "ingest", "redis", "postgres"):
                entry.update(_kill(platform_, probe, fault))
            elif fault == "erasure":
                entry.update(_erasure(platform_, a, subject))
                a_ids["request_id"] = entry.get("request_id", a_ids["request_id"])
            elif fault == "retention":
                entry.update(_retention(platform_))
            else:
                entry.update(_pipelines(platform_))
            entry["duration_s"] = round(traffic.now() - start, 2)
            report.append(entry)
            time.sleep(profile.steady_s)
        end = traffic.now()
        traffic.stop()
        answers = traffic.answers
        for i, entry in enumerate(report):
            until = report[i + 1]["start"] if i + 1 < len(report) else end
            entry["requests"] = _window(answers, entry.pop("start"), until)
        results["traffic"] = {
            **_window(answers, 0.0, end + 60),
            "seconds": round(end, 2),
            "achieved_rate": round(len(answers) / end, 1),
        }
        results["faults"] = report

        _progress("forged webhooks")
        suite = forged_webhooks(platform_.api, webhook_tenant["tenant_id"], provider)
        _progress("cross-tenant probes")
        results["cross_tenant"] = cross_tenant(
            platform_.api, a_headers, b_headers, a_ids, markers_of(a_ids)
        )
        for entry in report:
            if entry["fault"] == "erasure":
                _progress("waiting for the erasure's outcome")
                _erasure_outcome(platform_, a, entry, profile.erasure_wait_s)
        _progress("draining the ingest")
        drain = _drain(platform_, 180)
        results["drain"] = drain
        rows = _bronze(
            platform_.settings.lake_root,
            [t["tenant_id"] for t in (*tenants, probe_tenant, retention_tenant, webhook_tenant)],
        )
        counts = Counter(r["event_id"] for r in rows)
        acknowledged = [
            i for a_ in answers if a_.message_id for i in (a_.message_id, *a_.reply_ids)
        ]
        acknowledged += probe.acknowledged
        acknowledged += [a_ids["message_id"], *filter(None, a_ids["reply_ids"].split(","))]
        lost = [i for i in acknowledged if i not in counts]
        duplicated = {i: n for i, n in counts.items() if n > 1}
        results["lake"] = {
            "bronze_rows_checked": len(rows),
            "acknowledged_messages": sum(1 for a_ in answers if a_.message_id),
            "acknowledged_events": len(acknowledged),
            "lost": len(lost),
            "lost_sample": lost[:10],
            "duplicated": len(duplicated),
            "duplicated_sample": dict(list(duplicated.items())[:10]),
            "erased_subject_rows": sum(
                1 for r in rows if r["tenant_id"] == a["tenant_id"] and r["user_id"] == subject
            ),
            "expired_tenant_rows": sum(
                1 for r in rows if r["tenant_id"] == retention_tenant["tenant_id"]
            ),
        }
        inbound: Counter[str] = Counter()
        for r in rows:
            if r["tenant_id"] == webhook_tenant["tenant_id"] and r["direction"] == "in":
                sender = suite["senders"].get(r["channel"])
                if sender and str(r["user_id"]).endswith(sender):
                    inbound[r["channel"]] += 1
        results["forged_webhooks"] = lake_verdict(suite, dict(inbound))
        results["correctness"] = {
            "lost": len(lost),
            "duplicated": len(duplicated),
            "bad_5xx": sum(e["requests"]["bad_5xx"] for e in report),
            "cross_tenant_leaks": results["cross_tenant"]["leaks"],
            "forged_refused_ratio": results["forged_webhooks"]["refused_ratio"],
            "components_up_did_not_restart": [
                e["fault"] for e in report if e.get("restarted_by") == "bench"
            ],
        }
    finally:
        if traffic is not None and traffic._thread.is_alive():
            traffic.stop()
        provider.close()
        platform_.stop()
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)
    results["finished_at"] = datetime.now(UTC).isoformat()
    return write_results(results, out, "chaos.json")
