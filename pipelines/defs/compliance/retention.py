"""The nightly retention job (pipelines/compliance/retention.py): what each tenant keeps
longer than its `retention_days` (at most `CHATLAKE_LAKE_RETENTION_DAYS`) is deleted from
the lake (with erasure's guarantees), the per-person marts, the review queue and labels in
PostgreSQL, and Redis's live conversations, and the deletion is audited."""

import dagster as dg
from dagster import OpExecutionContext

from pipelines.common import WAREHOUSE_WRITER
from pipelines.compliance.retention import enforce_retention as retain
from pipelines.defs.resources import LakeResource


@dg.op(retry_policy=dg.RetryPolicy(max_retries=2, delay=30))
def enforce_retention(context: OpExecutionContext, lake: LakeResource) -> dg.Output[None]:
    """Each tenant's retention over the lake and the warehouse (pipelines/compliance/)."""
    report = retain(lake.settings())
    context.log.info(str(report["tenants"]))
    metadata = {
        "lake_rows_deleted": {
            name: table["rows_deleted"] for name, table in report["lake"].items()
        },
        "warehouse_rows_deleted": report["warehouse_rows_deleted"],
    }
    return dg.Output(None, metadata=metadata)


@dg.job(
    description="Delete each tenant's days older than its retention_days (at most "
    "CHATLAKE_LAKE_RETENTION_DAYS) from the lake and the per-person marts.",
    tags=WAREHOUSE_WRITER,
)
def lake_retention() -> None:
    enforce_retention()


retention_schedule = dg.ScheduleDefinition(
    job=lake_retention, cron_schedule="30 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)  # fmt: skip
