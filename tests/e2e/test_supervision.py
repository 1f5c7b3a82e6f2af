"""`chatlake up` supervises its processes: a child killed is restarted (and /readyz names it
while it is down), a store killed is started again, the children die with `up` even when it
is killed with SIGKILL, and SIGINT stops it within seconds even while it seeds the demo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from tests.utils.processes import READY_LINE, up_banner
from tests.utils.processes import descendant as _process
from tests.utils.processes import stop_stores as _stop_stores
from tests.utils.processes import until as _until

CHATLAKE = str(Path(sys.executable).parent / "chatlake")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _up(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CHATLAKE_HOME": str(home)}
    for name in ("CHATLAKE_LAKE_URI", "CHATLAKE_WAREHOUSE_PATH"):
        env.pop(name, None)
    return subprocess.Popen(
        [CHATLAKE, "up", "--no-dagster", "--no-dashboards", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip


def _wait_banner(proc: subprocess.Popen[str], timeout_s: float = 180) -> str:
    output = up_banner(proc, timeout_s)
    if READY_LINE not in output:
        raise AssertionError(output)
    return output


def _components(port: int) -> dict:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()["components"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}


def test_children_and_stores_are_restarted_and_die_with_up(tmp_path):
    port = _free_port()
    proc = _up(tmp_path, "--no-seed", "--port", str(port))
    try:
        _wait_banner(proc)
        up = psutil.Process(proc.pid)
        ingest = _process(up, "ingest")
        assert ingest is not None
        components = _components(port)
        assert components["ingest"]["status"] == "up" and components["api"]["status"] == "up"

        ingest.kill()  # kill -9 the ingest worker
        down = _until(lambda: _components(port).get("ingest", {}).get("status") == "down",
                      30, "/readyz did not say the ingest worker was down")  # fmt: skip
        assert down
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200  # API answers
        again = _until(
            lambda: (c := _components(port).get("ingest", {})).get("status") == "up"
            and c.get("restarts") == 1 and c,
            60, "the ingest worker was not restarted",
        )  # fmt: skip
        assert again["last_exit"] == 137
        restarted = _process(up, "ingest")
        assert restarted is not None and restarted.pid != ingest.pid

        redis_pid = json.loads((tmp_path / "run" / "services.json").read_text())["redis"]["pid"]
        os.kill(redis_pid, signal.SIGKILL)  # a store killed is started again by `up`
        _until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
               and _components(port)["redis"]["status"] == "up"
               and json.loads((tmp_path / "run" / "services.json").read_text())["redis"]["pid"]
               not in (None, redis_pid), 60, "Redis was not restarted")  # fmt: skip

        # two guards, the API, the ingest worker (which may be in its restart backoff after
        # losing Redis: wait for it)
        _until(lambda: len(_ours(tmp_path)) >= 4, 60, "up's children did not all come back")
        proc.kill()  # kill -9 `up`: its children go with it
        proc.wait(timeout=10)
        _until(lambda: not _ours(tmp_path), 20, "children of the killed `up` live on")
    finally:
        if proc.poll() is None:
            proc.kill()
        _stop_stores(tmp_path)


def test_sigint_while_seeding_the_demo_stops_up_within_seconds(tmp_path):
    port = _free_port()
    proc = _up(tmp_path, "--port", str(port))
    try:
        log = tmp_path / "run" / "seed.log"
        # SIGINT once the seed's pipeline run has started a step (where it used to hang)
        _until(lambda: log.exists() and "STEP_START" in log.read_text(errors="replace"), 240,
               "the seed's pipeline did not start")  # fmt: skip
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)  # bounded: it used to take minutes
        assert proc.returncode == 0, proc.stdout.read()
        assert _ours(tmp_path, stores=True) == []  # the seed, the stores: all stopped
    finally:
        if proc.poll() is None:
            proc.kill()
        _stop_stores(tmp_path)


def _ours(home: Path, stores: bool = False) -> list[str]:
    """The processes running with this CHATLAKE_HOME (the stores' only when `stores`)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("CHATLAKE_HOME") != str(home):
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            line = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if stores or not any(name in line for name in ("postgres", "redis-server")):
            found.append(f"{process.pid} {line}")
    return found
