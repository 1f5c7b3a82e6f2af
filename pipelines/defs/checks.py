"""Great Expectations suites as blocking asset checks: when one fails, the assets
downstream of the checked one are not materialized in that run."""

from datetime import date
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetCheckExecutionContext

from chatlake.runlock import pipeline_lock
from chatlake.settings import get_settings
from lake.datasets import arrow_dataset
from lake.writer import open_table, table_uri
from pipelines.common import RANGE_END_TAG, RANGE_START_TAG, LakeResource
from pipelines.quality import (
    Validation,
    conversations_suite,
    silver_events_suite,
    silver_turns_suite,
    tenant_daily_suite,
    validate,
)


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


def _mart(name: str, days: tuple[date, date] | None) -> pd.DataFrame:
    # under the pipeline lock: another run's dbt build would hold the file (chatlake/runlock.py)
    with (
        pipeline_lock(get_settings().home, "an asset check of the marts"),
        duckdb.connect(str(get_settings().warehouse), read_only=True) as connection,
    ):
        if days is None:
            return connection.sql(f"select * from {name}").df()
        return connection.execute(
            f"select * from {name} where day between ? and ?", [days[0], days[1]]
        ).df()


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
    frame = _silver(lake.root, "silver/turns", run_days(context))
    return _result(validate(frame, silver_turns_suite()))


@dg.asset_check(asset=dg.AssetKey(["silver", "conversation_events"]), blocking=True,
                description="Great Expectations: ids, event types, pseudonyms")  # fmt: skip
def silver_events_expectations(
    context: AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    frame = _silver(lake.root, "silver/conversation_events", run_days(context))
    return _result(validate(frame, silver_events_suite()))


@dg.asset_check(
    asset=dg.AssetKey(["fct_tenant_daily"]),
    blocking=True,
    description="Great Expectations: one row per tenant and day, rates in [0, 1]",
)
def tenant_daily_expectations(context: AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return _result(validate(_mart("fct_tenant_daily", run_days(context)), tenant_daily_suite()))


@dg.asset_check(asset=dg.AssetKey(["fct_conversations"]), blocking=True,
                description="Great Expectations: unique conversations, known statuses")  # fmt: skip
def conversations_expectations(context: AssetCheckExecutionContext) -> dg.AssetCheckResult:
    frame = _mart("fct_conversations", run_days(context))
    return _result(validate(frame, conversations_suite()))
