"""The lake writers under fault: the log cleaned under a running worker, two writers of
one table, a commit that fails, an orphan data file. Real Redis, real Delta tables, real
processes killed for real."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote
from uuid import uuid4

import polars as pl
import psycopg
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from chatlake.keyspace import EVENT_STREAMS, TenantKeyspace, ingest_lease, redis_sync_client
from chatlake.streams import GROUP
from lake.erasure import erase_from_table
from lake.ingest import FAILPOINT_ENV, IngestWorker, default_consumer_name
from lake.maintenance import apply_retention
from lake.schemas import BRONZE_CONVERSATION_EVENTS, MESSAGES_TABLE
from lake.writer import DeltaAppender
from pipelines.compliance.requests import run_erasure
from tests.integration.test_ingest import CHATLAKE, lake_rows, talk


@pytest.fixture
def redis_sync(endpoints):
    client = redis_sync_client(endpoints.redis_url)
    yield client
    client.close()


def referenced_files(table: DeltaTable) -> set[Path]:
    return {Path(unquote(uri.removeprefix("file://"))) for uri in table.file_uris()}


def data_files(table_dir: Path) -> set[Path]:
    return {p for p in table_dir.rglob("*.parquet") if "_delta_log" not in p.parts}


def chat(client, tenant, users: list[str], turns: int) -> list[dict]:
    """`turns` messages from each of `users`, in one conversation each."""
    responses = []
    for user in users:
        conversation: dict[str, str] = {}
        for turn in range(turns):
            body = {"user_id": user, "text": f"hello {turn}", **conversation}
            response = client.post("/v1/messages", json=body, headers=tenant.headers)
            assert response.status_code == 200, response.text
            conversation = {"conversation_id": response.json()["conversation_id"]}
            responses.append(response.json())
    return responses


def expected_ids(responses: list[dict]) -> set[str]:
    inbound = {r["message_id"] for r in responses}
    return inbound | {reply["message_id"] for r in responses for reply in r["replies"]}


def wait_for_lake(settings, redis, tenant, ids: set[str], timeout: float = 60) -> pl.DataFrame:
    """Bounded wait until every id is in bronze and the tenant's stream is empty."""
    stream = TenantKeyspace(tenant.tenant_id).events
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = lake_rows(settings, tenant.tenant_id)
        if ids <= set(rows["event_id"]) and redis.xlen(stream) == 0:
            break
        time.sleep(0.2)
    return lake_rows(settings, tenant.tenant_id)


def back_dated_copy(settings, tenant_id: str, days: int) -> pa.Table:
    """One of the tenant's bronze rows as if it had been written `days` ago."""
    rows = DeltaTable(f"{settings.lake_root}/{MESSAGES_TABLE}").to_pyarrow_table(
        filters=[("tenant_id", "=", tenant_id), ("user_id", "=", "kept")]
    )
    row = rows.slice(0, 1)  # not the subject erased below: its count must stay exact
    then = datetime.now(UTC) - timedelta(days=days)
    table = pl.from_arrow(row).with_columns(
        pl.lit(f"old-{uuid4()}").alias("event_id"),
        pl.lit(tenant_id).alias("tenant_id"),
        pl.lit(then).dt.cast_time_unit("us").alias("created_at"),
        pl.lit(then.date()).alias("date"),
    )
    return table.to_arrow().cast(row.schema)


def test_a_running_worker_survives_erasure_and_retention_cleaning_its_log(
    client, tenant, own_lake, services, redis_sync
):
    settings = own_lake
    IngestWorker(redis_sync, settings.lake_root, consumer=f"pre-{uuid4().hex[:6]}").drain()
    worker = IngestWorker(
        redis_sync_client(services.endpoints().redis_url),
        settings.lake_root,
        consumer=f"run-{uuid4().hex[:6]}",
        max_latency_ms=50,
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop.is_set)
        except BaseException as exc:  # reported below: the worker must not stop
            failure.append(exc)

    stop = threading.Event()
    runner = threading.Thread(target=run)
    runner.start()
    try:
        forgotten = chat(client, tenant, ["forget-me"], turns=2)  # erased below
        kept = chat(client, tenant, ["kept"], turns=2)
        wait_for_lake(settings, redis_sync, tenant, expected_ids(forgotten + kept))
        # the worker's view of the table is now a version that erasure's log clean-up
        # deletes; then retention deletes again, a row of this tenant 400 days old
        DeltaAppender(settings.lake_root, MESSAGES_TABLE).append(
            back_dated_copy(settings, tenant.tenant_id, 400), "test-old", 1
        )
        report = erase_from_table(
            settings.lake_root, MESSAGES_TABLE, tenant.tenant_id, "forget-me", "req-fault"
        )
        assert report["rows_deleted"] == len(expected_ids(forgotten))
        assert report["log_files_deleted"] > 0
        during = chat(client, tenant, ["during"], turns=1)  # while retention runs
        expired = apply_retention(settings.lake_root, 3650, None, {tenant.tenant_id: 30})
        assert expired[MESSAGES_TABLE]["by_tenant"] == {tenant.tenant_id: 1}
        assert expired[MESSAGES_TABLE]["log_files_deleted"] > 0
        after = chat(client, tenant, ["after"], turns=2)
        rows = wait_for_lake(
            settings, redis_sync, tenant, expected_ids(kept + during + after), timeout=90
        )
        assert runner.is_alive(), failure
    finally:
        stop.set()
        runner.join(timeout=60)
    assert not failure, failure
    assert rows["event_id"].n_unique() == rows.height, "duplicates in bronze/messages"
    assert set(rows["event_id"]) == expected_ids(kept + during + after)


def _ingest(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [CHATLAKE, "ingest", "--batch-size", "2", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _running_worker(env: dict[str, str], redis_sync) -> subprocess.Popen:
    """`chatlake ingest` under the default consumer name, once it holds the name's lease."""
    worker = _ingest(env, "--max-latency-ms", "20")
    deadline = time.monotonic() + 60
    while not redis_sync.exists(ingest_lease(default_consumer_name())):
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise AssertionError(worker.communicate())
        time.sleep(0.1)
    return worker


def test_ingest_once_beside_a_running_worker_exits_0_with_every_event_once(
    client, tenant, own_lake, redis_sync
):
    settings = own_lake
    IngestWorker(redis_sync, settings.lake_root, consumer=f"pre-{uuid4().hex[:6]}").drain()
    env = {**os.environ}
    env.pop(FAILPOINT_ENV, None)
    backlog = talk(client, tenant, users=25, turns=4)  # ~200 entries, 2 a commit
    # the worker as `chatlake up` runs it (the default consumer name), and `--once`
    # started with it, so that both drain the backlog at the same time
    worker = _ingest(env, "--max-latency-ms", "20")
    once = _ingest(env, "--once")
    try:
        _, err = once.communicate(timeout=180)
        assert once.returncode == 0, err[-3000:]
        assert worker.poll() is None, worker.communicate()
        more = talk(client, tenant, users=3, turns=3)
        worker.send_signal(signal.SIGKILL)  # killed mid-stream: its lease dies with it
        worker.wait(timeout=30)
        rescue = subprocess.run(
            [CHATLAKE, "ingest", "--once", "--batch-size", "5"],
            capture_output=True, text=True, env=env, timeout=180,
        )  # fmt: skip
        assert rescue.returncode == 0, rescue.stderr[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
    rows = lake_rows(settings, tenant.tenant_id)
    assert rows["event_id"].n_unique() == rows.height, "duplicates in bronze/messages"
    assert set(rows["event_id"]) == expected_ids(backlog + more)
    assert redis_sync.xlen(TenantKeyspace(tenant.tenant_id).events) == 0

    # a name that a live process runs, given explicitly: refused in one line
    worker = _running_worker(env, redis_sync)
    try:
        same = subprocess.run(
            [CHATLAKE, "ingest", "--once", "--consumer", default_consumer_name()],
            capture_output=True, text=True, env=env, timeout=180,
        )  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    assert same.returncode != 0 and "already running" in same.stderr, same.stderr
    assert "Traceback" not in same.stderr
    assert worker.returncode == 0  # stopped cleanly, its lease given back
    assert not redis_sync.exists(ingest_lease(default_consumer_name()))


def _events(tag: str, tenant_id: str, n: int = 50) -> pa.Table:
    now = datetime.now(UTC)
    columns = {
        "event_id": [f"{tag}-{i}" for i in range(n)],
        "event_type": ["conversation_started"] * n,
        "tenant_id": [tenant_id] * n,
        "conversation_id": [f"c-{tag}"] * n,
        "user_id": ["someone"] * n,
        "channel": ["api"] * n,
        "payload": [f"their text {tag}"] * n,
        "created_at": [now] * n,
        "date": [now.date()] * n,
    }
    return pa.table(columns, schema=BRONZE_CONVERSATION_EVENTS)


def test_commits_that_fail_leave_no_untracked_file(tmp_path):
    """Two writers race one app transaction (as two processes under one consumer name
    would): every round one commit wins and the other fails; the loser must take its
    data file away and report the batch as already there."""
    root, tenant_id = str(tmp_path / "lake"), str(uuid4())
    name = "bronze/conversation_events"
    writers = [DeltaAppender(root, name) for _ in range(2)]
    outcomes: list[bool] = []
    for version in range(1, 13):
        start = threading.Barrier(2)

        def append(k: int, version: int = version, start: threading.Barrier = start) -> None:
            start.wait()
            outcomes.append(
                writers[k].append(_events(f"{version}-{k}", tenant_id), "same", version)
            )

        racers = [threading.Thread(target=append, args=(k,)) for k in range(2)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
    table = DeltaTable(f"{root}/{name}")
    assert outcomes.count(True) == 12 and outcomes.count(False) == 12
    assert table.transaction_version("same") == 12
    assert data_files(Path(root, name)) == referenced_files(table)  # no untracked file
    assert table.to_pyarrow_table().num_rows == 12 * 50


def test_an_orphan_file_holding_the_subject_does_not_stop_the_erasure(
    client, tenant, own_lake, redis_sync, endpoints
):
    settings = own_lake
    subject = f"orphan-{uuid4().hex[:6]}"
    secret = f"walrus-{uuid4().hex[:8]}"
    response = client.post(
        "/v1/messages", json={"user_id": subject, "text": f"my code is {secret}"},
        headers=tenant.headers,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    IngestWorker(redis_sync, settings.lake_root, consumer=f"orph-{uuid4().hex[:6]}").drain()
    # What a writer killed between its data file and its commit leaves (and what failed
    # commits left before writers cleaned up after themselves): a fresh data file in the
    # tenant's partition, holding the subject's text, that no version references.
    table_dir = Path(settings.lake_root, MESSAGES_TABLE)
    [holding] = [
        p for p in referenced_files(DeltaTable(str(table_dir)))
        if secret in str(pl.read_parquet(p)["text"].to_list())
    ]  # fmt: skip
    orphan = holding.with_name(f"part-00000-{uuid4()}-c000.snappy.parquet")
    shutil.copyfile(holding, orphan)

    certificate = run_erasure(settings, tenant.tenant_id, subject, actor="test")

    assert certificate["verification"]["passed"], certificate["verification"]
    assert not orphan.exists()
    with psycopg.connect(endpoints.database_url) as owner:
        (status,) = owner.execute(
            "select status from erasure_requests where request_id = %s",
            (certificate["request_id"],),
        ).fetchone()
    assert status == "completed"


def _group_consumers(redis) -> dict[str, int]:
    """Every consumer of the group `lake` on any event stream, with its pending entries."""
    listed: dict[str, int] = {}
    for stream in redis.smembers(EVENT_STREAMS):
        for info in redis.xinfo_consumers(stream, GROUP):
            name = info["name"].decode()
            listed[name] = listed.get(name, 0) + info["pending"]
    return listed


def test_ingest_once_beside_a_running_worker_leaves_the_group_after_a_clean_drain(
    client, tenant, own_lake, redis_sync
):
    """`--once` beside `up`'s worker drains under a name of its own, used once: after a
    clean drain that name is no longer a consumer of any stream (it was, forever)."""
    env = {**os.environ}
    env.pop(FAILPOINT_ENV, None)
    worker = _running_worker(env, redis_sync)
    try:
        talk(client, tenant, users=2, turns=2)
        once = subprocess.run([CHATLAKE, "ingest", "--once"], capture_output=True, text=True,
                              env=env, timeout=180)  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    assert once.returncode == 0, once.stderr[-3000:]
    name = json.loads(once.stdout)["consumer"]
    assert name.startswith(f"{default_consumer_name()}-once-"), name
    listed = _group_consumers(redis_sync)
    assert name not in listed
    assert default_consumer_name() in listed  # the running worker's name is its own


def test_a_consumer_with_pending_entries_stays_in_the_group(client, tenant, own_lake, redis_sync):
    settings = own_lake
    talk(client, tenant, users=1, turns=2)
    name = f"pend-{uuid4().hex[:6]}"
    reader = IngestWorker(redis_sync, settings.lake_root, consumer=name)
    assert reader._read(dict.fromkeys(reader.streams(), ">"), None) is not None  # never acked
    reader.leave_group()
    assert _group_consumers(redis_sync)[name] > 0  # kept: another worker recovers them
    IngestWorker(redis_sync, settings.lake_root, consumer=name).drain()  # commits, then leaves
    assert name not in _group_consumers(redis_sync)


def test_a_worker_that_waited_for_its_name_loses_nothing_it_reads_after(
    client, tenant, own_lake, redis_sync
):
    """A worker that starts while another process drains under its name (`ingest --once`
    took the default name while `up` restarted the worker) claims the name once it is
    free: the batches it then reads must commit under versions after the other's, not be
    skipped as already committed and acknowledged (lost)."""
    settings = own_lake
    name = f"wait-{uuid4().hex[:6]}"
    waiting = IngestWorker(redis_sync, settings.lake_root, consumer=name)
    talk(client, tenant, users=1, turns=2)
    IngestWorker(redis_sync, settings.lake_root, consumer=name).drain()  # had the name first
    first = lake_rows(settings, tenant.tenant_id).height
    assert first > 0
    talk(client, tenant, users=1, turns=2)
    waiting.drain()
    assert lake_rows(settings, tenant.tenant_id).height == 2 * first
