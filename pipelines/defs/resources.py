"""Resources of the code location."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource

from pipelines.common import dbt_project, lake_resource

DBT = str(Path(sys.executable).parent / "dbt")  # the one installed beside this Python


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "lake": lake_resource(),
            "dbt": DbtCliResource(project_dir=dbt_project(), dbt_executable=DBT),
        }
    )
