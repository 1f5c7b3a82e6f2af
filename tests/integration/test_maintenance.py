"""Compaction, checkpoint and vacuum on a real Delta table."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import polars as pl
from deltalake import DeltaTable

from chatlake.keyspace import redis_sync_client
from lake.ingest import IngestWorker
from lake.maintenance import maintain
from lake.readers import scan
from lake.schemas import MESSAGES_TABLE
from tests.utils.factories import send


def test_maintenance_compacts_checkpoints_and_vacuums_without_losing_rows(
    client, tenant, endpoints, tmp_path
):
    lake_root = str(tmp_path / "lake")
    redis = redis_sync_client(endpoints.redis_url)
    # what earlier tests left in the streams, in one batch (one entry a batch would take
    # minutes after a suite's worth of traffic)
    IngestWorker(redis, lake_root, consumer=f"backlog-{uuid4().hex[:6]}").drain()
    # Many small commits, as at low traffic: a batch of one entry each.
    worker = IngestWorker(redis, lake_root, consumer=f"small-{uuid4().hex[:6]}", batch_size=1)
    for i in range(6):
        assert send(client, tenant, f"msg {i}").status_code == 200
    worker.drain()
    uri = f"{lake_root}/{MESSAGES_TABLE}"
    before = DeltaTable(uri)
    files_before = len(before.file_uris())
    rows_before = scan(lake_root, MESSAGES_TABLE, tenant.tenant_id).collect()
    assert rows_before.height == 12 and files_before >= 12

    [report, *_] = maintain(lake_root, retention_hours=0)

    after = DeltaTable(uri)
    assert report["files_before"] == files_before
    assert report["files_after"] == len(after.file_uris()) < files_before
    assert report["files_vacuumed"] >= files_before - report["files_after"]
    assert list(Path(uri, "_delta_log").glob("*.checkpoint.parquet"))
    operations = [entry["operation"] for entry in after.history()]
    assert "OPTIMIZE" in operations
    rows_after = scan(lake_root, MESSAGES_TABLE, tenant.tenant_id).collect()
    assert rows_after.sort("event_id").equals(rows_before.sort("event_id"))
    assert rows_after["event_id"].n_unique() == 12
    assert rows_after.filter(pl.col("direction") == "in").height == 6
    redis.close()
