"""The lakehouse job, the sensor that runs it when bronze data lands, and the schedules
that keep the lake fast (compaction, checkpoints, vacuum) and within its retention."""

from datetime import date, timedelta

import dagster as dg
from dagster import OpExecutionContext, SensorEvaluationContext

from compliance.retention import enforce_retention as retain
from lake.maintenance import maintain
from lake.silver import days_added_since
from pipelines.common import (
    DAILY,
    RANGE_END_TAG,
    RANGE_START_TAG,
    LakeResource,
    lake_resource,
)
from pipelines.run import WAREHOUSE_WRITER

lakehouse = dg.define_asset_job(
    "lakehouse",
    selection=dg.AssetSelection.groups("silver", "warehouse_staging", "marts"),
    partitions_def=DAILY,
    description="silver, then the dbt warehouse, with their checks, for the given days.",
    tags=WAREHOUSE_WRITER,
)


@dg.sensor(
    job=lakehouse, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING
)
def bronze_landed(context: SensorEvaluationContext) -> dg.SensorResult:
    """A run per stretch of consecutive days that got new bronze files since the last
    look (one day: that day's partition; several: one single-run backfill over them)."""
    since = int(context.cursor or 0)
    days, newest = days_added_since(lake_resource().root, since)
    requests = []
    for first, last in consecutive_runs(days):
        if first == last:
            request = dg.RunRequest(partition_key=first.isoformat(),
                                    run_key=f"{first.isoformat()}@{newest}")  # fmt: skip
        else:
            request = dg.RunRequest(
                run_key=f"{first.isoformat()}..{last.isoformat()}@{newest}",
                tags={RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()},
            )
        requests.append(request)
    return dg.SensorResult(run_requests=requests, cursor=str(newest))


def consecutive_runs(days: list[date]) -> list[tuple[date, date]]:
    """Sorted days grouped into (first, last) stretches without a gap."""
    stretches: list[tuple[date, date]] = []
    for day in days:
        if stretches and day - stretches[-1][1] == timedelta(days=1):
            stretches[-1] = (stretches[-1][0], day)
        else:
            stretches.append((day, day))
    return stretches


@dg.op
def maintain_lake(context: OpExecutionContext, lake: LakeResource) -> None:
    for report in maintain(lake.root):
        context.log.info(str(report))


@dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=30))
def enforce_retention(context: OpExecutionContext, lake: LakeResource) -> dg.Output[None]:
    """Each tenant's retention over the lake and the warehouse (compliance/retention.py)."""
    report = retain(lake.settings())
    context.log.info(str(report["tenants"]))
    metadata = {
        "lake_rows_deleted": {
            name: table["rows_deleted"] for name, table in report["lake"].items()
        },
        "warehouse_rows_deleted": report["warehouse_rows_deleted"],
    }
    return dg.Output(None, metadata=metadata)


@dg.job(description="Compact small files, checkpoint, vacuum: every lake table.")
def lake_maintenance() -> None:
    maintain_lake()


@dg.job(
    description="Delete each tenant's days older than its retention_days (at most "
    "CHATLAKE_LAKE_RETENTION_DAYS) from the lake and the per-person marts.",
    tags=WAREHOUSE_WRITER,
)
def lake_retention() -> None:
    enforce_retention()


maintenance_schedule = dg.ScheduleDefinition(
    job=lake_maintenance, cron_schedule="0 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)  # fmt: skip
retention_schedule = dg.ScheduleDefinition(
    job=lake_retention, cron_schedule="30 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)  # fmt: skip
