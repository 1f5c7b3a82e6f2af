"""The lakehouse job, the sensor that runs it when bronze data lands, and the schedules
that keep the lake fast (compaction, checkpoints, vacuum) and within its retention."""

import dagster as dg
from dagster import OpExecutionContext, SensorEvaluationContext

from chatlake.settings import get_settings
from lake.maintenance import apply_retention, maintain
from lake.silver import days_added_since
from pipelines.common import DAILY, LakeResource, lake_resource

lakehouse = dg.define_asset_job(
    "lakehouse",
    selection=dg.AssetSelection.groups("silver", "warehouse_staging", "marts"),
    partitions_def=DAILY,
    description="silver, then the dbt warehouse, with their checks, for the given days.",
)


@dg.sensor(
    job=lakehouse, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING
)
def bronze_landed(context: SensorEvaluationContext) -> dg.SensorResult:
    """A run per day that got new bronze files since the last look."""
    since = int(context.cursor or 0)
    days, newest = days_added_since(lake_resource().root, since)
    requests = [
        dg.RunRequest(partition_key=day.isoformat(), run_key=f"{day.isoformat()}@{newest}")
        for day in days
    ]
    return dg.SensorResult(run_requests=requests, cursor=str(newest))


@dg.op
def maintain_lake(context: OpExecutionContext, lake: LakeResource) -> None:
    for report in maintain(lake.root):
        context.log.info(str(report))


@dg.op
def enforce_retention(context: OpExecutionContext, lake: LakeResource) -> None:
    keep = get_settings().lake_retention_days
    context.log.info(f"retention {keep} days: {apply_retention(lake.root, keep)}")


@dg.job(description="Compact small files, checkpoint, vacuum: every lake table.")
def lake_maintenance() -> None:
    maintain_lake()


@dg.job(description="Delete bronze and silver days older than CHATLAKE_LAKE_RETENTION_DAYS.")
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
