"""Billing in Dagster (pipelines/billing.py): the monthly-partitioned `invoices` asset over
the marts (read with the warehouse resource, so no run's dbt build rewrites them while they
are billed), a daily schedule that keeps the current month's drafts up to date, and one on
the 2nd of each month that closes the month before (its last day's data has landed by
then)."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster import AssetExecutionContext, ScheduleEvaluationContext

from chatlake.billing import month_label
from pipelines.common import WAREHOUSE_WRITER
from pipelines.defs.resources import WarehouseResource

MONTHLY = dg.MonthlyPartitionsDefinition(start_date="2025-01-01", end_offset=1)


class BillingConfig(dg.Config):
    close: bool = False  # finalize the months of the run (only months that are over)


@dg.asset(
    key="invoices",
    group_name="billing",
    partitions_def=MONTHLY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["fct_tenant_daily", "fct_model_usage"],
    description="Each tenant's invoice for the month: usage from the marts priced under "
    "its plan, with line items, in PostgreSQL for GET /v1/billing/invoices.",
)
def invoices(
    context: AssetExecutionContext, warehouse: WarehouseResource, config: BillingConfig
) -> dg.MaterializeResult:
    from pipelines.billing import bill_month, months_between

    start, end = context.partition_time_window
    outcomes = []
    for month in months_between(start.date(), (end - timedelta(days=1)).date()):
        outcomes += bill_month(warehouse.settings(), month, close=config.close)
    for outcome in outcomes:
        context.log.info(str(outcome))
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome["outcome"]] = counts.get(outcome["outcome"], 0) + 1
    failed = {o["tenant_id"]: o["reason"] for o in outcomes if o["outcome"] == "failed"}
    if failed:  # the others are billed; the run fails so that someone looks
        raise dg.Failure(
            description=f"{len(failed)} tenant(s) could not be billed: {failed}",
            metadata={"failed": failed, **counts},
        )
    return dg.MaterializeResult(
        metadata={
            "invoices": len(outcomes),
            **counts,
            "differs": [o["invoice_id"] for o in outcomes if o["outcome"] == "differs"],
        }
    )


billing = dg.define_asset_job(
    "billing",
    selection=dg.AssetSelection.assets("invoices"),
    description="Invoices for the given months: drafts brought up to date, or finalized "
    "with the run config {ops: {invoices: {config: {close: true}}}}.",
    tags=WAREHOUSE_WRITER,  # it reads the warehouse: never while dbt writes it
)


def _month_key(day: datetime) -> str:
    return f"{month_label(day.date())}-01"


@dg.schedule(job=billing, cron_schedule="0 5 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)  # fmt: skip
def billing_drafts(context: ScheduleEvaluationContext) -> dg.RunRequest:
    """The current month's drafts, every morning."""
    now = context.scheduled_execution_time or datetime.now(UTC)
    return dg.RunRequest(partition_key=_month_key(now))


@dg.schedule(job=billing, cron_schedule="0 6 2 * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)  # fmt: skip
def billing_close(context: ScheduleEvaluationContext) -> dg.RunRequest:
    """Close the month before: its invoices become final."""
    now = context.scheduled_execution_time or datetime.now(UTC)
    previous = now.replace(day=1) - timedelta(days=1)
    return dg.RunRequest(
        partition_key=_month_key(previous),
        run_config={"ops": {"invoices": {"config": {"close": True}}}},
    )
