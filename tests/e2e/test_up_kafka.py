"""`chatlake up` on the Kafka event bus (a real Kafka-protocol broker, Tansu): the API's
messages go through the relay and the Kafka ingest into the lake, exactly once, while the
relay and the ingest worker are killed under traffic and restarted by `up`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import orjson
import polars as pl
import psutil
import pytest

from bench.engines import free_port, tansu_broker
from lake.readers import scan
from lake.schemas import MESSAGES_TABLE
from tests.utils.processes import (
    CHATLAKE,
    READY_LINE,
    descendant,
    stop_stores,
    until,
    up_banner,
)

pytestmark = pytest.mark.scale


def _env(home: Path, bootstrap: str) -> dict[str, str]:
    env = {**os.environ, "CHATLAKE_HOME": str(home), "CHATLAKE_EVENT_BUS": "kafka",
           "CHATLAKE_KAFKA_BOOTSTRAP": bootstrap, "CHATLAKE_KAFKA_PARTITIONS": "3"}  # fmt: skip
    for name in ("CHATLAKE_LAKE_URI", "CHATLAKE_WAREHOUSE_PATH", "CHATLAKE_KAFKA_TOPIC"):
        env.pop(name, None)
    return env


def _demo(home: Path) -> dict:
    return orjson.loads((home / "demo-tenant.json").read_bytes())


def _lake_ids(home: Path) -> set[str]:
    rows = scan(str(home / "lake"), MESSAGES_TABLE, _demo(home)["tenant_id"]).collect()
    assert rows["event_id"].n_unique() == rows.height, "duplicates in bronze/messages"
    return set(rows["event_id"])


def test_up_on_kafka_loses_nothing_when_the_relay_and_ingest_are_killed(tmp_path):
    port = free_port()
    with tansu_broker(tmp_path / "tansu.log") as bootstrap:
        env = _env(tmp_path, bootstrap)
        proc = subprocess.Popen(
            [CHATLAKE, "up", "--no-dagster", "--no-dashboards", "--no-seed", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        try:
            banner = up_banner(proc, 240)
            assert READY_LINE in banner, banner
            assert f"Kafka {bootstrap}" in banner
            headers = {"Authorization": f"Bearer {_demo(tmp_path)['api_key']}"}
            up = psutil.Process(proc.pid)
            sent: set[str] = set()

            def talk(user: str, turns: int) -> None:
                conversation = None
                for t in range(turns):
                    body = {"user_id": user, "text": f"hello {t}"}
                    if conversation:
                        body["conversation_id"] = conversation
                    answer = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=body,
                                        headers=headers, timeout=30)  # fmt: skip
                    assert answer.status_code == 200, answer.text
                    reply = answer.json()
                    conversation = reply["conversation_id"]
                    sent.add(reply["message_id"])
                    sent.update(r["message_id"] for r in reply["replies"])

            talk("alice", 5)
            until(lambda: sent <= _lake_ids(tmp_path), 120, "the first messages missed the lake")
            for name in ("relay", "ingest"):  # kill -9 each under traffic; `up` restarts it
                child = descendant(up, name)
                assert child is not None, name
                talk(f"before-{name}", 3)
                child.kill()
                talk(f"after-{name}", 3)
                until(lambda n=name, c=child: (again := descendant(up, n)) and again.pid != c.pid,
                      60, f"{name} was not restarted")  # fmt: skip
            until(lambda: sent <= _lake_ids(tmp_path), 180, "messages missed the lake")
            assert _lake_ids(tmp_path) == sent
            status = subprocess.run([CHATLAKE, "ingest", "--status"], env=env,
                                    capture_output=True, text=True, timeout=120)  # fmt: skip
            assert status.returncode == 0, status.stderr
            shown = orjson.loads(status.stdout)
            assert shown["bus"] == "kafka" and shown["lag"] == 0
            assert len(shown["partitions"]) == 3
            assert all(p["owner"] for p in shown["partitions"])
            lake = scan(str(tmp_path / "lake"), MESSAGES_TABLE, _demo(tmp_path)["tenant_id"])
            lake = lake.collect()
            assert lake.filter(pl.col("direction") == "in").height == 5 + 4 * 3
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            stop_stores(tmp_path)
