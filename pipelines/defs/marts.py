"""The dbt project's models as assets: staging, intermediate and marts in the warehouse.

Each model is an asset (its lineage from the silver tables comes from dbt's sources), and
dbt's tests run as asset checks. A run passes its partition window to dbt as vars, so the
incremental marts rebuild only those days.
"""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from pipelines.common import DAILY, dbt_project, step_lock, window

PROJECT = dbt_project()


class Translator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        folder = dbt_resource_props.get("fqn", ["", "models"])[1]
        return "marts" if folder == "marts" else "warehouse_staging"


@dbt_assets(
    manifest=PROJECT.manifest_path,
    project=PROJECT,
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    dagster_dbt_translator=Translator(),
)
def warehouse(context: AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
    first, last = window(context)
    days = {"min_day": first.isoformat(), "max_day": last.isoformat()}
    with step_lock(context):  # one run at a time writes the warehouse (chatlake/runlock.py)
        yield from dbt.cli(["build", "--vars", json.dumps(days)], context=context).stream()
