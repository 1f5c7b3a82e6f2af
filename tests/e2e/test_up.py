"""`chatlake up` on an empty home: the demo tenant seeded through the API and the pipeline,
the printed login opens the dashboards on its figures, the printed key works in the
printed curl, Dagster runs the code location and an erasure job; Ctrl-C stops all."""

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

from dashboards.screenshots import PAGES
from lake.readers import scan
from lake.schemas import MESSAGES_TABLE
from pipelines.common import RANGE_START_TAG
from tests.utils.processes import up_banner

CHATLAKE = str(Path(sys.executable).parent / "chatlake")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_up_seeds_the_demo_and_runs_dagster_and_the_dashboards(tmp_path, monkeypatch):
    port, dagster_port, dashboards_port = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "CHATLAKE_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [CHATLAKE, "up", "--port", str(port), "--dagster-port", str(dagster_port),
         "--dashboards-port", str(dashboards_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        output = up_banner(proc, timeout_s=420)
        assert f"Dagster        http://127.0.0.1:{dagster_port}" in output, output
        dashboards = f"http://127.0.0.1:{dashboards_port}"
        assert f"dashboards     {dashboards}" in output
        assert httpx.get(f"{dashboards}/_stcore/health").text == "ok"
        email, password = re.search(r"demo login\s+(\S+) / (\S+)", output).groups()
        _check_the_seeded_dashboards(tmp_path, email, password, dashboards, monkeypatch)
        _check_the_printed_curl(tmp_path, output, port)

        repository = '{repositoryLocationName: "pipelines", repositoryName: "__repository__"}'
        query = (
            "{ assetNodes { assetKey { path } } "
            f"sensorsOrError(repositorySelector: {repository}) "
            "{ ... on Sensors { results { name sensorState { status } } } } }"
        )
        deadline = time.monotonic() + 180  # the code location may still be loading (or
        while True:  # reloading after a restart by `up`) on a loaded machine
            answer = httpx.post(
                f"http://127.0.0.1:{dagster_port}/graphql", json={"query": query}, timeout=60
            ).json()["data"]
            if answer["assetNodes"] or time.monotonic() > deadline:
                break
            time.sleep(2)
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
        deadline = time.monotonic() + 600  # behind the sensor's lakehouse run, maybe
        while time.monotonic() < deadline and request["status"] in ("queued", "running"):
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
        # the sensor saw the seeded days (and today's curl) and builds them in one run over
        # their range (one at a time with the erasure: they share the writers' limit)
        query = (
            '{ runsOrError(filter: {pipelineName: "lakehouse"}) '
            "{ ... on Runs { results { status tags { key value } } } } }"
        )
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = httpx.post(
                f"http://127.0.0.1:{dagster_port}/graphql", json={"query": query}, timeout=60
            ).json()["data"]["runsOrError"]["results"]
            if runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
                break
            time.sleep(1)
        assert runs and all(r["status"] == "SUCCESS" for r in runs), runs
        ranges = [{t["key"]: t["value"] for t in r["tags"]} for r in runs]
        assert any(RANGE_START_TAG in tags for tags in ranges), ranges
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
    rest = proc.stdout.read()
    logs = {p.name: p.read_text()[-1500:] for p in (tmp_path / "run").glob("*.log")}
    assert proc.returncode == 0, (rest, logs)  # a child that died says so here
    with pytest.raises(httpx.HTTPError):  # the webserver stopped with `up`
        httpx.get(f"http://127.0.0.1:{dagster_port}/server_info", timeout=2)
    assert _processes_with_env("DAGSTER_HOME", str(tmp_path / "dagster")) == []  # daemon too
    status = subprocess.run(
        [CHATLAKE, "services", "status"], capture_output=True, text=True, env=env, check=True
    )
    report = json.loads(status.stdout)
    assert report["postgres"]["running"] is False
    assert report["redis"]["running"] is False


def _check_the_printed_curl(home: Path, output: str, port: int) -> None:
    """The printed key works in the printed curl, and the ingest worker that `up` runs
    carries the exchange into the lake."""
    api_key = re.search(r"demo API key\s+(\S+)", output).group(1)
    curl = re.search(r"curl -s (\S+)", output).group(1)
    body = json.loads(re.search(r"-d '(\{.*\})'", output).group(1))
    response = httpx.post(curl, json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200, response.text
    assert response.json()["replies"][0]["text"]
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    tenant_id = re.search(r"^\s+demo tenant\s+([0-9a-f-]{36})$", output, re.M).group(1)
    wanted = {response.json()["message_id"], response.json()["replies"][0]["message_id"]}
    found: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not wanted <= found:
        time.sleep(0.5)
        rows = scan(str(home / "lake"), MESSAGES_TABLE, tenant_id).collect()
        found = set(rows["event_id"]) if rows.height else set()
    assert wanted <= found


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


def _check_the_seeded_dashboards(home, email: str, password: str, url: str, monkeypatch) -> None:
    """The printed login opens every page on the demo's seeded data, with charts: through
    the served app in headless Chromium when the machine has it (the screenshot script),
    and through Streamlit's AppTest on the same stores in any case."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from chatlake.settings import get_settings

    chromium = Path("/usr/bin/chromium")
    if chromium.exists():
        shots = subprocess.run(
            [sys.executable, "-m", "dashboards.screenshots", "--url", url, "--email", email,
             "--password", password, "--out", str(home / "screenshots")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert shots.returncode == 0, (shots.stdout, shots.stderr[-2000:])
        pages = json.loads(shots.stdout)["pages"]
        assert all(p["charts"] and not p["tracebacks"] for p in pages)
        # the demo login is an analyst: every page but billing, which is for admins
        assert [p["page"] for p in pages] == [t for t in PAGES if t != "Billing and invoices"]
    monkeypatch.setenv("CHATLAKE_HOME", str(home))
    get_settings.cache_clear()
    st.cache_resource.clear()
    try:
        app = AppTest.from_file(str(Path(__file__).parents[2] / "dashboards" / "app.py"),
                                default_timeout=60)  # fmt: skip
        app.run()
        app.text_input(key="email").input(email)
        app.text_input(key="password").input(password)
        app.button[0].click()
        app.run()
        shown = {m.label: m.value for m in app.metric}
        assert int(shown["Conversations"].replace(",", "")) >= 100, shown  # 4 days x 30
        assert shown["Days with traffic"] == "4"
        for page in ["conversations", "intents", "usage", "quality"]:
            app.switch_page(f"views/{page}.py").run()
            assert not app.exception and not app.error, page
            assert app.get("vega_lite_chart"), page
        with pytest.raises(ValueError, match="navigation page"):  # an analyst's: no billing
            app.switch_page("views/billing.py")
    finally:
        get_settings.cache_clear()
        st.cache_resource.clear()
