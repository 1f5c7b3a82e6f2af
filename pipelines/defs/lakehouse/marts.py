"""The dbt project's marts as assets: the tables of the warehouse.

Each mart is an asset (its lineage from the silver tables comes from dbt's sources, through
the ephemeral staging and intermediate models, which are no relations and so no assets).
dbt's tests run as asset checks: the marts' on the marts, the sources' on silver/turns and
silver/conversation_events. A run passes its partition window to dbt as vars, so the
incremental marts rebuild only those days. The step requires the warehouse resource for
the pipeline lock it holds while dbt (a subprocess) writes the file: one run at a time
writes it.
"""

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)

from pipelines.common import DAILY, dbt_project, dbt_run_target, window
from pipelines.defs.resources import WarehouseResource

PROJECT = dbt_project()


class Translator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "marts"  # the only models that are assets: the others are ephemeral


@dbt_assets(
    name="warehouse",  # the op's name in run configs and the UI
    manifest=PROJECT.manifest_path,
    project=PROJECT,
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    dagster_dbt_translator=Translator(
        DagsterDbtTranslatorSettings(enable_source_tests_as_checks=True)
    ),
)
def dbt_models(
    context: AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,  # required for the pipeline lock it holds
) -> Iterator[Any]:
    first, last = window(context)
    days = {"min_day": first.isoformat(), "max_day": last.isoformat()}
    target = dbt_run_target(Path(warehouse.home), f"warehouse-{context.run.run_id[:8]}")
    invocation = dbt.cli(["build", "--vars", json.dumps(days)], context=context, target_path=target)
    yield from invocation.stream()
