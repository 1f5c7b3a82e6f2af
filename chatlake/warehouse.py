"""Reading the DuckDB warehouse (the dbt marts) from outside the pipelines: billing and
the dashboards. A DuckDB file has one writer at a time; while a pipeline run holds it, a
reader waits and retries rather than failing."""

from __future__ import annotations

import time

import duckdb

from chatlake.errors import ChatlakeError
from chatlake.settings import Settings

LOCK_RETRIES = 40  # half a second apart: a pipeline run's dbt build holds the file ~20 s


class WarehouseBusy(ChatlakeError):
    pass


def read_warehouse(
    settings: Settings, retries: int = LOCK_RETRIES
) -> duckdb.DuckDBPyConnection | None:
    """A read-only connection (None before the first pipeline run has built the file)."""
    path = settings.warehouse
    for _ in range(retries):
        if not path.exists():
            return None
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException:
            time.sleep(0.5)
    raise WarehouseBusy("the warehouse is being rebuilt by a pipeline run; try again shortly")


def has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = conn.execute(
        "select count(*) from information_schema.tables where table_name = ?", [name]
    ).fetchone()
    return bool(found and found[0])
