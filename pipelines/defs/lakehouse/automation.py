"""The lakehouse job, the sensor that runs it when bronze data lands, and the schedule that
keeps the lake fast (compaction, checkpoints, vacuum). Retention, which also keeps the lake
within each tenant's policy, is a compliance job (`defs/compliance/retention.py`)."""

from datetime import date, timedelta

import dagster as dg
from dagster import OpExecutionContext, SensorEvaluationContext

from lake.maintenance import maintain
from lake.silver import days_added_since
from pipelines.common import RANGE_END_TAG, RANGE_START_TAG, WAREHOUSE_WRITER
from pipelines.defs.resources import LakeResource

lakehouse = dg.define_asset_job(
    "lakehouse",
    selection=dg.AssetSelection.groups("silver", "marts"),
    description="silver, then the dbt warehouse, with their checks, for the given days.",
    tags=WAREHOUSE_WRITER,
)


@dg.sensor(
    job=lakehouse, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING
)
def bronze_landed(context: SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    """A run per stretch of consecutive days that got new bronze files since the last
    look (one day: that day's partition; several: one single-run backfill over them)."""
    since = int(context.cursor or 0)
    days, newest = days_added_since(lake.root, since)
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


@dg.job(description="Compact small files, checkpoint, vacuum: every lake table.")
def lake_maintenance() -> None:
    maintain_lake()


maintenance_schedule = dg.ScheduleDefinition(
    job=lake_maintenance, cron_schedule="0 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)  # fmt: skip
