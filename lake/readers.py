"""Tenant-scoped readers of the lake tables, for polars and DuckDB.

Both go through `tenant_dataset`, the one tenant-scoping helper of the lake: it selects the
files of the tenant's partition from the Delta log, so another tenant's files are never
opened, whatever the query does afterwards.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import duckdb
import polars as pl
import pyarrow.dataset as ds

from lake.datasets import arrow_dataset
from lake.schemas import TABLE_SCHEMAS
from lake.writer import open_table, table_uri


def tenant_dataset(lake_root: str, name: str, tenant_id: str) -> ds.Dataset | None:
    """The rows of one tenant in table `name`, as a pyarrow dataset (None: no table yet)."""
    if name not in TABLE_SCHEMAS:
        raise ValueError(f"unknown lake table {name!r}")
    tenant = str(UUID(tenant_id))  # refuses anything but a tenant id
    table = open_table(table_uri(lake_root, name))
    if table is None:
        return None
    return arrow_dataset(table, file_pruning_predicate=[("tenant_id", "=", tenant)])


def scan(lake_root: str, name: str, tenant_id: str) -> pl.LazyFrame:
    """A polars LazyFrame over one tenant's rows."""
    dataset = tenant_dataset(lake_root, name, tenant_id)
    if dataset is None:
        return pl.LazyFrame(schema=dict(pl.Schema(TABLE_SCHEMAS[name])))
    return pl.scan_pyarrow_dataset(dataset)


def duckdb_query(
    lake_root: str, name: str, tenant_id: str, sql: str, params: list[Any] | None = None
) -> duckdb.DuckDBPyRelation:
    """Run `sql` against one tenant's rows, visible to the query as the view `rows`."""
    connection = duckdb.connect()
    dataset = tenant_dataset(lake_root, name, tenant_id)
    if dataset is None:
        import pyarrow as pa

        connection.register("rows", pa.Table.from_pylist([], schema=TABLE_SCHEMAS[name]))
    else:
        connection.register("rows", dataset)
    return connection.sql(sql, params=params)
