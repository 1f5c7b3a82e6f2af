"""The code location's automation: the sensor that notices new bronze days, and the
maintenance and retention jobs, run against real Delta tables."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import dagster as dg
import numpy as np
import pytest
from deltalake import DeltaTable

from bench.pipeline import generate_day, write_bronze
from lake.erasure import readable_versions
from lake.silver import build_silver
from pipelines.defs.compliance.retention import lake_retention
from pipelines.defs.lakehouse.automation import bronze_landed, lake_maintenance
from pipelines.defs.resources import LakeResource


@pytest.fixture
def lake(tmp_path):
    return LakeResource(root=str(tmp_path / "lake"), home=str(tmp_path))


def look(lake: LakeResource, cursor: str) -> dg.SensorResult:
    """One evaluation of the sensor with the lake resource, as the daemon makes it."""
    with dg.build_sensor_context(cursor=cursor, resources={"lake": lake}) as context:
        return bronze_landed(context)


def test_the_sensor_requests_a_run_for_each_stretch_of_days_that_got_data(lake):
    today = datetime.now(UTC).date()
    rng = np.random.default_rng(3)
    assert look(lake, "0").run_requests == []  # no lake yet: nothing to do

    write_bronze(lake.root, *generate_day(today - timedelta(days=3), 60, [str(uuid4())], rng))
    write_bronze(lake.root, *generate_day(today - timedelta(days=1), 60, [str(uuid4())], rng))
    result = look(lake, "0")
    assert [r.partition_key for r in result.run_requests] == [
        (today - timedelta(days=3)).isoformat(), (today - timedelta(days=1)).isoformat()
    ]  # fmt: skip
    assert look(lake, result.cursor).run_requests == []

    time.sleep(0.01)
    write_bronze(lake.root, *generate_day(today, 60, [str(uuid4())], rng))
    later = look(lake, result.cursor)
    assert [r.partition_key for r in later.run_requests] == [today.isoformat()]

    # consecutive days go in one run over their range (a single-run backfill)
    time.sleep(0.01)
    for back in (1, 2):
        write_bronze(lake.root, *generate_day(today - timedelta(days=back), 9, [str(uuid4())], rng))
    both = look(lake, later.cursor).run_requests
    assert len(both) == 1 and both[0].partition_key is None
    assert both[0].partition_key_range == dg.PartitionKeyRange(
        (today - timedelta(days=2)).isoformat(), (today - timedelta(days=1)).isoformat()
    )


def test_maintenance_and_retention_jobs(own_lake):
    lake = LakeResource(root=own_lake.lake_root, home=str(own_lake.home))
    today = datetime.now(UTC).date()
    rng = np.random.default_rng(5)
    old, recent = today - timedelta(days=500), today - timedelta(days=2)
    tenant = str(uuid4())
    for day in (old, recent):
        for _ in range(3):  # several small commits to one partition, as ingest makes them
            write_bronze(lake.root, *generate_day(day, 40, [tenant], rng))
    build_silver(lake.root, old, recent, "key")
    files = len(DeltaTable(f"{lake.root}/bronze/messages").file_uris())

    assert lake_maintenance.execute_in_process(resources={"lake": lake}).success
    assert len(DeltaTable(f"{lake.root}/bronze/messages").file_uris()) < files  # compacted

    assert lake_retention.execute_in_process(resources={"lake": lake}).success  # 400 days
    for name in ("bronze/messages", "bronze/conversation_events", "silver/turns"):
        table = DeltaTable(f"{lake.root}/{name}")
        days = set(table.to_pyarrow_table()["date"].to_pylist())
        assert days == {recent}, name
        # with erasure's guarantees: no file of the old day on disk, no older version left
        on_disk = list(Path(lake.root, name).rglob(f"date={old.isoformat()}/*.parquet"))
        assert on_disk == [], name
        assert readable_versions(lake.root, name) == [table.version()], name
