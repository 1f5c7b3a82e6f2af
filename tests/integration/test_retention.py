"""Per-tenant retention: set through the API, enforced by the nightly Dagster job over the
lake (with erasure's guarantees) and the per-person marts, audited per tenant."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import duckdb
import numpy as np
from deltalake import DeltaTable

from bench.pipeline import generate_day, write_bronze
from chatlake.keyspace import TenantKeyspace, redis_sync_client
from lake.erasure import readable_versions
from pipelines.compliance.retention import expire_warehouse
from pipelines.defs.compliance.retention import lake_retention
from pipelines.defs.resources import LakeResource
from pipelines.run import run_pipeline
from tests.utils.factories import create_tenant, send


def _days(root: str, name: str) -> dict[str, set]:
    rows = DeltaTable(f"{root}/{name}").to_pyarrow_table(columns=["tenant_id", "date"])
    found: dict[str, set] = {}
    for tenant, day in zip(rows["tenant_id"].to_pylist(), rows["date"].to_pylist(), strict=True):
        found.setdefault(tenant, set()).add(day)
    return found


def test_retention_is_set_per_tenant_and_rejects_bad_values(client, admin_headers):
    tenant = create_tenant(client, admin_headers)
    assert client.get("/v1/tenant", headers=tenant.headers).json()["retention_days"] == 90
    for bad in (0, -1, 36501, "ninety", None):
        answer = client.patch("/v1/tenant", json={"retention_days": bad}, headers=tenant.headers)
        assert answer.status_code == 422, bad
    answer = client.patch("/v1/tenant", json={"retention_days": 30}, headers=tenant.headers)
    assert answer.status_code == 200 and answer.json()["retention_days"] == 30
    answer = client.patch(
        f"/v1/tenants/{tenant.tenant_id}", json={"retention_days": 45}, headers=admin_headers
    )
    assert answer.json()["retention_days"] == 45
    entries = client.get("/v1/audit-log", headers=tenant.headers).json()["entries"]
    changes = [e["detail"] for e in entries if e["action"] == "tenant.updated"]
    assert {"retention_days": 45} in changes and {"retention_days": 30} in changes


def test_the_retention_job_keeps_each_tenant_its_own_days(
    client, admin_headers, own_lake, endpoints
):
    settings = own_lake
    short, normal = create_tenant(client, admin_headers), create_tenant(client, admin_headers)
    client.patch("/v1/tenant", json={"retention_days": 30}, headers=short.headers)
    # two live conversations in Redis; one has been idle for 40 days (its last activity
    # moved back, as 40 days of waiting would leave it)
    idle = send(client, short, "hello", user_id="idle").json()["conversation_id"]
    active = send(client, short, "hello", user_id="active").json()["conversation_id"]
    keys = TenantKeyspace(short.tenant_id)
    redis = redis_sync_client(endpoints.redis_url)
    forty_days_ago = (datetime.now(UTC) - timedelta(days=40)).timestamp() * 1000
    redis.zadd(keys.user_conversations("idle"), {idle: forty_days_ago}, xx=True)
    stranger = str(uuid4())  # partitions of a tenant the control plane does not know
    today = datetime.now(UTC).date()
    recent, older, oldest = (today - timedelta(days=n) for n in (10, 60, 120))
    rng = np.random.default_rng(11)
    tenants = [short.tenant_id, normal.tenant_id, stranger]
    for day in (recent, older, oldest):
        for tenant in tenants:
            write_bronze(settings.lake_root, *generate_day(day, 30, [tenant], rng))
    assert run_pipeline(settings, oldest, today)["success"]
    bronze = DeltaTable(f"{settings.lake_root}/bronze/messages").to_pyarrow_table(
        columns=["tenant_id", "date"]
    )
    pairs = zip(bronze["tenant_id"].to_pylist(), bronze["date"].to_pylist(), strict=True)
    expiring = Counter(
        tenant
        for tenant, day in pairs
        if (tenant == short.tenant_id and day < today - timedelta(days=30))
        or (tenant == normal.tenant_id and day < today - timedelta(days=90))
    )

    resource = LakeResource(root=settings.lake_root, home=str(settings.home))
    assert lake_retention.execute_in_process(resources={"lake": resource}).success

    expected = {
        short.tenant_id: {recent},
        normal.tenant_id: {recent, older},
        stranger: {recent, older, oldest},  # no policy: the platform's 400-day ceiling
    }
    for name in ("bronze/messages", "bronze/conversation_events", "silver/turns"):
        assert _days(settings.lake_root, name) == expected, name
        assert readable_versions(settings.lake_root, name) == [
            DeltaTable(f"{settings.lake_root}/{name}").version()
        ], name
        for tenant, day in ((short.tenant_id, older), (normal.tenant_id, oldest)):
            partition = Path(settings.lake_root, name, f"tenant_id={tenant}", f"date={day}")
            assert list(partition.glob("*.parquet")) == [], (name, tenant, day)

    with duckdb.connect(str(settings.warehouse), read_only=True) as warehouse:
        for mart in ("fct_messages", "fct_conversations"):
            rows = warehouse.execute(f"select distinct tenant_id, day from {mart}").fetchall()
            found: dict[str, set] = {}
            for tenant, day in rows:
                found.setdefault(tenant, set()).add(day)
            assert found[short.tenant_id] <= {recent} and found[short.tenant_id], mart
            assert oldest not in found[normal.tenant_id], mart
            assert oldest in found[stranger], mart
        daily = warehouse.execute(
            "select count(*) from fct_tenant_daily where tenant_id = ? and day = ?",
            [short.tenant_id, oldest],
        ).fetchall()[0][0]
        assert daily == 1  # counts of no one stay for trends and billing

    for tenant in (short, normal):
        entries = client.get("/v1/audit-log", headers=tenant.headers).json()["entries"]
        retained = [e for e in entries if e["action"] == "compliance.retention"]
        assert len(retained) == 1
        assert retained[0]["detail"]["lake_rows_deleted"] >= expiring[tenant.tenant_id] > 0

    assert not redis.exists(keys.conversation(idle), keys.messages(idle))
    assert redis.exists(keys.conversation(active)) == 1  # idle for less than 30 days
    entries = client.get("/v1/audit-log", headers=short.headers).json()["entries"]
    detail = next(e["detail"] for e in entries if e["action"] == "compliance.retention")
    assert detail["redis_conversations_deleted"] == 1
    redis.close()

    # run again: nothing more to delete, nothing audited twice
    assert lake_retention.execute_in_process(resources={"lake": resource}).success
    entries = client.get("/v1/audit-log", headers=short.headers).json()["entries"]
    assert sum(e["action"] == "compliance.retention" for e in entries) == 1


def test_the_warehouse_writer_waits_for_another_process_reading_it(own_lake):
    """DuckDB refuses a writer while another process reads the file (a dashboard): the
    retention's delete waits for it (chatlake/warehouse.py) instead of failing the job."""
    settings = own_lake
    today = datetime.now(UTC).date()
    with duckdb.connect(str(settings.warehouse)) as warehouse:
        warehouse.execute(
            "create table fct_messages as select 't1' as tenant_id, ?::date - range::int as day,"
            " 'k' as user_key from range(10)",
            [today],
        )
    reader = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         f"c = duckdb.connect({str(settings.warehouse)!r}, read_only=True)\n"
         "print('reading', flush=True)\ntime.sleep(2)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        started = time.monotonic()
        deleted = expire_warehouse(settings, {"t1": today - timedelta(days=4)})
        waited = time.monotonic() - started
    finally:
        reader.wait(timeout=30)
    assert deleted == {"fct_messages": 5} and waited > 1
    with duckdb.connect(str(settings.warehouse), read_only=True) as warehouse:
        assert warehouse.execute("select min(day) from fct_messages").fetchall() == [
            (today - timedelta(days=4),)
        ]
