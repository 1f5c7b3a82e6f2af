"""`chatlake up` on an empty home: the printed key works in the printed curl; Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lake.readers import scan
from lake.schemas import MESSAGES_TABLE

CHATLAKE = str(Path(sys.executable).parent / "chatlake")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _banner(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """What `up` prints until it says it is ready (or stops printing)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    return "".join(lines)


def test_up_serves_the_demo_tenant_and_stops_cleanly(tmp_path):
    port = _free_port()
    env = {**os.environ, "CHATLAKE_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [CHATLAKE, "up", "--port", str(port), "--no-dagster", "--no-dashboards"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        output = _banner(proc, timeout_s=120)
        assert "chatlake is up" in output, output
        api_key = re.search(r"demo API key\s+(\S+)", output).group(1)
        curl = re.search(r"curl -s (\S+)", output).group(1)
        body = json.loads(re.search(r"-d '(\{.*\})'", output).group(1))

        response = httpx.post(curl, json=body, headers={"Authorization": f"Bearer {api_key}"})
        assert response.status_code == 200, response.text
        assert response.json()["replies"][0]["text"]
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200

        # The ingest worker that `up` runs carries the exchange into the lake.
        tenant_id = re.search(r"demo tenant\s+(\S+)", output).group(1)
        wanted = {response.json()["message_id"], response.json()["replies"][0]["message_id"]}
        found: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and found != wanted:
            time.sleep(0.5)
            rows = scan(str(tmp_path / "lake"), MESSAGES_TABLE, tenant_id).collect()
            found = set(rows["event_id"]) if rows.height else set()
        assert found == wanted
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    status = subprocess.run(
        [CHATLAKE, "services", "status"], capture_output=True, text=True, env=env, check=True
    )
    report = json.loads(status.stdout)
    assert report["postgres"]["running"] is False
    assert report["redis"]["running"] is False
    assert proc.returncode == 0


def test_up_runs_the_dagster_code_location(tmp_path):
    port, dagster_port = _free_port(), _free_port()
    env = {**os.environ, "CHATLAKE_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [CHATLAKE, "up", "--port", str(port), "--dagster-port", str(dagster_port),
         "--no-dashboards"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        output = _banner(proc, timeout_s=240)
        assert f"Dagster        http://127.0.0.1:{dagster_port}" in output, output
        repository = '{repositoryLocationName: "pipelines", repositoryName: "__repository__"}'
        query = (
            "{ assetNodes { assetKey { path } } "
            f"sensorsOrError(repositorySelector: {repository}) "
            "{ ... on Sensors { results { name sensorState { status } } } } }"
        )
        answer = httpx.post(
            f"http://127.0.0.1:{dagster_port}/graphql", json={"query": query}, timeout=60
        ).json()["data"]
        assets = {"/".join(node["assetKey"]["path"]) for node in answer["assetNodes"]}
        assert {"bronze/messages", "silver/turns", "fct_tenant_daily"} <= assets
        sensors = {
            s["name"]: s["sensorState"]["status"] for s in answer["sensorsOrError"]["results"]
        }
        assert sensors == {"bronze_landed": "RUNNING", "labels_arrived": "RUNNING"}

        # An erasure request launches the erasure job on this Dagster, which certifies it
        # (a user with no lake rows, so no day is rebuilt: tests/e2e/test_erasure.py has those)
        headers = {"Authorization": "Bearer " + re.search(r"demo API key\s+(\S+)", output).group(1)}
        api = f"http://127.0.0.1:{port}/v1"
        request = httpx.post(
            f"{api}/compliance/erasure-requests", json={"user_id": "leaving"}, headers=headers
        ).json()
        assert request["executor"] == "dagster" and request["run_id"], request
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and request["status"] == "running":
            time.sleep(1)
            request = httpx.get(
                f"{api}/compliance/erasure-requests/{request['request_id']}", headers=headers
            ).json()
        assert request["status"] == "completed", request
        assert request["certificate"]["verification"]["passed"] is True
        query = (
            f'{{ runOrError(runId: "{request["run_id"]}") '
            "{ ... on Run { jobName status runConfigYaml } } }"
        )
        run = {"status": "STARTED"}
        while time.monotonic() < deadline and run["status"] in ("QUEUED", "STARTING", "STARTED"):
            time.sleep(1)  # the run ends after it destroys the subject's key
            run = httpx.post(
                f"http://127.0.0.1:{dagster_port}/graphql", json={"query": query}, timeout=60
            ).json()["data"]["runOrError"]
        assert run["jobName"] == "erase_subject" and run["status"] == "SUCCESS", run
        assert "leaving" not in run["runConfigYaml"]  # sealed, and its key is gone
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
    rest = proc.stdout.read()
    logs = {p.name: p.read_text()[-1500:] for p in (tmp_path / "run").glob("*.log")}
    assert proc.returncode == 0, (rest, logs)  # a child that died says so here
    with pytest.raises(httpx.HTTPError):  # the webserver stopped with `up`
        httpx.get(f"http://127.0.0.1:{dagster_port}/server_info", timeout=2)
    assert _processes_with_env("DAGSTER_HOME", str(tmp_path / "dagster")) == []  # daemon too


def _processes_with_env(name: str, value: str) -> list[int]:
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(name) == value:
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found
