"""The event log into the lake, exactly once: real Redis streams, real Delta tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

import polars as pl
import pytest
from deltalake import DeltaTable

from chatlake.keyspace import TenantKeyspace, redis_sync_client
from lake.ingest import FAILPOINT_ENV, IngestWorker
from lake.readers import duckdb_query, scan
from lake.schemas import CONVERSATION_EVENTS_TABLE, MESSAGES_TABLE
from tests.utils.factories import send

CHATLAKE = str(Path(sys.executable).parent / "chatlake")


@pytest.fixture
def redis_sync(endpoints):
    client = redis_sync_client(endpoints.redis_url)
    yield client
    client.close()


def talk(client, tenant, users: int, turns: int) -> list[dict]:
    """`users` conversations of `turns` messages each; returns the API responses."""
    responses = []
    for u in range(users):
        conversation_id = None
        for t in range(turns):
            body = send(
                client,
                tenant,
                f"hello {t}",
                user_id=f"user-{u}",
                **({"conversation_id": conversation_id} if conversation_id else {}),
            )
            assert body.status_code == 200
            conversation_id = body.json()["conversation_id"]
            responses.append(body.json())
    return responses


def lake_rows(settings, tenant_id, table=MESSAGES_TABLE) -> pl.DataFrame:
    return scan(settings.lake_root, table, tenant_id).collect()


def run_ingest(home: str, consumer: str, failpoint: str | None = None, batch_size: int = 5000):
    env = {**os.environ, "CHATLAKE_HOME": home}
    env.pop(FAILPOINT_ENV, None)
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    return subprocess.run(
        [CHATLAKE, "ingest", "--once", "--consumer", consumer, "--batch-size", str(batch_size)],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip


def assert_exactly_once(settings, tenant, responses):
    rows = lake_rows(settings, tenant.tenant_id)
    assert rows["event_id"].n_unique() == rows.height, "duplicates in bronze/messages"
    inbound = {r["message_id"] for r in responses}
    outbound = {reply["message_id"] for r in responses for reply in r["replies"]}
    assert set(rows.filter(pl.col("direction") == "in")["event_id"]) == inbound
    assert set(rows.filter(pl.col("direction") == "out")["event_id"]) == outbound


def test_n_messages_give_n_in_rows_and_one_out_row_per_reply(client, tenant, settings, home):
    responses = talk(client, tenant, users=3, turns=4)
    result = run_ingest(home, f"once-{uuid4().hex[:6]}")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["entries"] >= 12 * 2 + 3
    assert_exactly_once(settings, tenant, responses)
    rows = lake_rows(settings, tenant.tenant_id)
    assert rows.filter(pl.col("direction") == "in").height == 12
    first = rows.sort("created_at").row(0, named=True)
    assert first["user_id"] == "user-0" and first["channel"] == "api" and first["text"] == "hello 0"
    assert str(first["date"]) == first["created_at"].date().isoformat()
    started = lake_rows(settings, tenant.tenant_id, CONVERSATION_EVENTS_TABLE)
    assert started["event_type"].to_list() == ["conversation_started"] * 3


def test_the_stream_keeps_only_what_is_not_yet_in_the_lake(client, tenant, settings, redis_sync):
    talk(client, tenant, users=1, turns=3)
    stream = TenantKeyspace(tenant.tenant_id).events
    assert redis_sync.xlen(stream) == 7
    IngestWorker(redis_sync, settings.lake_root, consumer=f"trim-{uuid4().hex[:6]}").drain()
    assert redis_sync.xlen(stream) == 0


@pytest.mark.parametrize("failpoint", ["before_commit", "after_commit"])
def test_a_worker_killed_mid_batch_leaves_every_event_in_the_lake_once(
    client, tenant, settings, home, redis_sync, failpoint
):
    # Drain what other tests left, so the crashing batch is this test's own.
    IngestWorker(redis_sync, settings.lake_root, consumer=f"pre-{uuid4().hex[:6]}").drain()
    responses = talk(client, tenant, users=2, turns=3)
    consumer = f"crash-{failpoint}-{uuid4().hex[:6]}"
    crashed = run_ingest(home, consumer, failpoint=failpoint)
    assert crashed.returncode == -signal.SIGKILL
    stream = TenantKeyspace(tenant.tenant_id).events
    assert redis_sync.xlen(stream) == 14  # nothing acknowledged, nothing trimmed
    in_lake = lake_rows(settings, tenant.tenant_id).height
    assert in_lake == (12 if failpoint == "after_commit" else 0)

    restarted = run_ingest(home, consumer)
    assert restarted.returncode == 0, restarted.stderr
    assert_exactly_once(settings, tenant, responses)
    assert redis_sync.xlen(stream) == 0
    history = DeltaTable(f"{settings.lake_root}/{MESSAGES_TABLE}").history()
    commits = [h for h in history if h.get("writer") == f"ingest:{consumer}"]
    assert len(commits) == 1  # the retried batch was not committed a second time


def test_a_dead_consumers_batch_is_recovered_by_another(client, tenant, settings, home, redis_sync):
    IngestWorker(redis_sync, settings.lake_root, consumer=f"pre-{uuid4().hex[:6]}").drain()
    responses = talk(client, tenant, users=2, turns=2)
    dead = f"dead-{uuid4().hex[:6]}"
    assert run_ingest(home, dead, failpoint="after_commit").returncode == -signal.SIGKILL
    survivor = IngestWorker(
        redis_sync, settings.lake_root, consumer=f"alive-{uuid4().hex[:6]}", reap_after_ms=0
    )
    assert dead in survivor.reap_dead_consumers()
    survivor.drain()
    assert_exactly_once(settings, tenant, responses)


def test_two_workers_side_by_side_lose_nothing_and_duplicate_nothing(
    client, tenant, other_tenant, settings, home
):
    responses = talk(client, tenant, users=10, turns=6)
    other = talk(client, other_tenant, users=5, turns=6)
    tag = uuid4().hex[:6]
    env = {**os.environ, "CHATLAKE_HOME": home}
    env.pop(FAILPOINT_ENV, None)
    workers = [
        subprocess.Popen(
            [CHATLAKE, "ingest", "--once", "--consumer", f"pair-{tag}-{i}", "--batch-size", "7"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=180) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    entries = [json.loads(out)["entries"] for out, _ in outputs]
    assert all(n > 0 for n in entries), "both workers should have taken batches"
    assert_exactly_once(settings, tenant, responses)
    assert_exactly_once(settings, other_tenant, other)


def test_a_reader_scoped_to_one_tenant_never_returns_anothers_rows(
    client, tenant, other_tenant, settings, redis_sync
):
    talk(client, tenant, users=1, turns=2)
    talk(client, other_tenant, users=1, turns=2)
    IngestWorker(redis_sync, settings.lake_root, consumer=f"read-{uuid4().hex[:6]}").drain()
    mine = lake_rows(settings, tenant.tenant_id)
    assert mine.height == 4
    assert set(mine["tenant_id"]) == {tenant.tenant_id}
    counted = duckdb_query(
        settings.lake_root, MESSAGES_TABLE, tenant.tenant_id,
        "select count(*), count(distinct tenant_id) from rows where tenant_id <> ?",
        [tenant.tenant_id],
    ).fetchall()[0]  # fmt: skip
    assert counted == (0, 0)
    with pytest.raises(ValueError):
        scan(settings.lake_root, MESSAGES_TABLE, "' or 1=1 --")


def test_ingest_status_and_metrics_report_the_lag(client, tenant, settings, home, redis_sync):
    IngestWorker(redis_sync, settings.lake_root, consumer=f"lag-{uuid4().hex[:6]}").drain()
    talk(client, tenant, users=1, turns=2)
    env = {**os.environ, "CHATLAKE_HOME": home}
    status = json.loads(
        subprocess.run(
            [CHATLAKE, "ingest", "--status"], capture_output=True, text=True, env=env, check=True
        ).stdout
    )
    assert status["stream_length"] >= 5
    assert MESSAGES_TABLE in status["tables"]
    metrics = client.get("/metrics").text
    assert "chatlake_event_stream_length" in metrics
    line = next(x for x in metrics.splitlines() if x.startswith("chatlake_event_stream_length "))
    assert float(line.split()[1]) >= 5
    IngestWorker(redis_sync, settings.lake_root, consumer=f"lag-{uuid4().hex[:6]}").drain()
    metrics = client.get("/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("chatlake_event_stream_length "))
    assert float(line.split()[1]) == 0
    assert "chatlake_ingest_rows_per_second{consumer=" in metrics


def test_a_running_worker_rides_out_a_redis_restart(client, tenant, settings, services, redis_sync):
    import threading

    IngestWorker(redis_sync, settings.lake_root, consumer=f"pre-{uuid4().hex[:6]}").drain()
    worker = IngestWorker(
        redis_sync_client(services.endpoints().redis_url),
        settings.lake_root,
        consumer=f"run-{uuid4().hex[:6]}",
        max_latency_ms=100,
    )
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop.is_set,))
    runner.start()
    try:
        first = talk(client, tenant, users=1, turns=3)
        services.redis.stop()
        services.redis.start()
        second = talk(client, tenant, users=1, turns=3)
        deadline = time.monotonic() + 30
        stream = TenantKeyspace(tenant.tenant_id).events
        while time.monotonic() < deadline and (
            lake_rows(settings, tenant.tenant_id).height < 12 or redis_sync.xlen(stream) > 0
        ):
            time.sleep(0.2)
        assert redis_sync.xlen(stream) == 0  # caught up: nothing in the stream is in the lake
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert_exactly_once(settings, tenant, first + second)
