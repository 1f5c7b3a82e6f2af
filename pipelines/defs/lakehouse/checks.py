"""Great Expectations suites as blocking asset checks: when one fails, the assets
downstream of the checked one are not materialized in that run. Silver is read from the
lake, the marts through the warehouse resource (read-only, under the run's pipeline lock)."""

from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetCheckExecutionContext

from lake.datasets import arrow_dataset
from lake.schemas import SILVER_CONVERSATION_EVENTS_TABLE, TURNS_TABLE
from lake.writer import open_table, table_uri
from pipelines.common import RANGE_END_TAG, RANGE_START_TAG
from pipelines.defs.resources import LakeResource, WarehouseResource
from pipelines.quality import (
    Validation,
    conversations_suite,
    silver_events_suite,
    silver_turns_suite,
    tenant_daily_suite,
    validate,
)

if TYPE_CHECKING:
    import great_expectations as gx


def run_days(context: AssetCheckExecutionContext) -> tuple[date, date] | None:
    """The days of the run's partitions (None: not a partitioned run: check everything)."""
    tags = context.run.tags
    if RANGE_START_TAG in tags:
        return date.fromisoformat(tags[RANGE_START_TAG]), date.fromisoformat(tags[RANGE_END_TAG])
    if "dagster/partition" in tags:
        day = date.fromisoformat(tags["dagster/partition"])
        return day, day
    return None


def _silver(lake_root: str, name: str, days: tuple[date, date] | None) -> pd.DataFrame:
    table = open_table(table_uri(lake_root, name))
    if table is None:
        return pd.DataFrame()
    dataset = arrow_dataset(table)
    if days is None:
        return dataset.to_table().to_pandas()
    day = pc.field("date")
    where = (day >= pa.scalar(days[0])) & (day <= pa.scalar(days[1]))
    return dataset.to_table(filter=where).to_pandas()


def _check_mart(
    warehouse: WarehouseResource,
    name: str,
    days: tuple[date, date] | None,
    suite: Callable[[], "gx.ExpectationSuite"],
) -> dg.AssetCheckResult:
    """The suite over the mart's rows of the days; failed when the warehouse file is
    missing (the run that should have built it did not)."""
    with warehouse.reader() as connection:
        if connection is None:
            return dg.AssetCheckResult(passed=False, description="no warehouse file")
        if days is None:
            frame = connection.sql(f"select * from {name}").df()
        else:
            frame = connection.execute(
                f"select * from {name} where day between ? and ?", [days[0], days[1]]
            ).df()
    return _result(validate(frame, suite()))


def _result(validation: Validation) -> dg.AssetCheckResult:
    metadata: dict[str, Any] = {"rows": validation.rows, "failed": validation.failed}
    return dg.AssetCheckResult(passed=validation.success, metadata=metadata)


@dg.asset_check(
    asset=dg.AssetKey(["silver", "turns"]),
    blocking=True,
    description="Great Expectations: ids, directions, pseudonyms, no email left",
)
def silver_turns_expectations(
    context: AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    frame = _silver(lake.root, TURNS_TABLE, run_days(context))
    return _result(validate(frame, silver_turns_suite()))


@dg.asset_check(asset=dg.AssetKey(["silver", "conversation_events"]), blocking=True,
                description="Great Expectations: ids, event types, pseudonyms")  # fmt: skip
def silver_events_expectations(
    context: AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    frame = _silver(lake.root, SILVER_CONVERSATION_EVENTS_TABLE, run_days(context))
    return _result(validate(frame, silver_events_suite()))


@dg.asset_check(
    asset=dg.AssetKey(["fct_tenant_daily"]),
    blocking=True,
    description="Great Expectations: one row per tenant and day, rates in [0, 1]",
)
def tenant_daily_expectations(
    context: AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return _check_mart(warehouse, "fct_tenant_daily", run_days(context), tenant_daily_suite)


@dg.asset_check(asset=dg.AssetKey(["fct_conversations"]), blocking=True,
                description="Great Expectations: unique conversations, known statuses")  # fmt: skip
def conversations_expectations(
    context: AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return _check_mart(warehouse, "fct_conversations", run_days(context), conversations_suite)
