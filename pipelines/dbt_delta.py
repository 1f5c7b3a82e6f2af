"""dbt-duckdb's `delta` source plugin, reading local tables on Arrow's native filesystem
(lake/datasets.py says why: the built-in plugin's Python filesystem deadlocks DuckDB's scan
now and then). Named in dbt/profiles.yml as `pipelines.dbt_delta` with the alias `delta`."""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import delta
from dbt.adapters.duckdb.utils import SourceConfig
from deltalake import DeltaTable

from lake.datasets import arrow_dataset


class Plugin(delta.Plugin):
    def load(self, source_config: SourceConfig) -> Any:
        if "delta_table_path" not in source_config:
            raise ValueError("a delta source needs 'delta_table_path'")
        options = source_config.get("storage_options", None)
        table = DeltaTable(source_config["delta_table_path"], storage_options=options or None)
        version = source_config.get("as_of_version", None)
        if version is not None:
            table.load_as_version(version)
        return arrow_dataset(table)
