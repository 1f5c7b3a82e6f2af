"""The DuckDB warehouse (the dbt marts), for everyone but a pipeline run's dbt build:
readers (billing, the dashboards, erasure's verification) and the writers that change the
marts outside a run (erasure and retention delete the per-person rows, then rewrite the
file so that no freed block keeps them).

A DuckDB file has one writer at a time, and a writer excludes the readers of other
processes. While another process holds the file (a pipeline run's dbt build holds it ~20 s,
a dashboard's read much less), a connection waits and retries rather than failing, up to
`LOCK_RETRIES` half-second tries. Writers also hold the pipeline lock (chatlake/runlock.py)
for the block, so they queue behind (or run inside) a pipeline run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import duckdb

from chatlake.errors import ChatlakeError
from chatlake.runlock import pipeline_lock
from chatlake.settings import Settings

LOCK_RETRIES = 40  # half a second apart: a pipeline run's dbt build holds the file ~20 s


class WarehouseBusy(ChatlakeError):
    pass


def _connect(settings: Settings, read_only: bool, retries: int) -> duckdb.DuckDBPyConnection | None:
    """A connection to the warehouse file (None while it does not exist), retried while
    another process holds the file."""
    path = settings.warehouse
    for _ in range(retries):
        if not path.exists():
            return None
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException:
            time.sleep(0.5)
    if read_only:
        raise WarehouseBusy(
            "the warehouse is being written (by a pipeline run or a compliance job); "
            "try again shortly"
        )
    raise WarehouseBusy("another process is reading or writing the warehouse; try again shortly")


def read_warehouse(
    settings: Settings, retries: int = LOCK_RETRIES
) -> duckdb.DuckDBPyConnection | None:
    """A read-only connection (None before the first pipeline run has built the file)."""
    return _connect(settings, read_only=True, retries=retries)


@contextlib.contextmanager
def write_warehouse(
    settings: Settings, what: str, retries: int = LOCK_RETRIES
) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """A read-write connection for the block, under the pipeline lock (`what` names the
    writer to a run waiting for it), closed at its end; None when no pipeline run has built
    the file yet (a writer outside a run never creates it)."""
    with pipeline_lock(settings.home, what):
        connection = _connect(settings, read_only=False, retries=retries)
        if connection is None:
            yield None
            return
        with connection:
            yield connection


def rewrite_warehouse(settings: Settings, what: str) -> bool:
    """Copy the warehouse into a fresh file and swap it in (atomically: readers see the old
    file or the new one), so that no freed block of the old file keeps a deleted row.
    False when there is no file."""
    warehouse = settings.warehouse
    fresh = warehouse.with_suffix(".rewrite.duckdb")
    with write_warehouse(settings, what) as connection:
        if connection is None:
            return False
        fresh.unlink(missing_ok=True)
        connection.execute(f"attach '{fresh}' as fresh")
        connection.execute(f"copy from database {warehouse.stem} to fresh")
        connection.execute("detach fresh")
        connection.close()  # before the swap: nothing of the old file stays open
        fresh.replace(warehouse)
        warehouse.with_suffix(".duckdb.wal").unlink(missing_ok=True)
    return True


def has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = conn.execute(
        "select count(*) from information_schema.tables where table_name = ?", [name]
    ).fetchone()
    return bool(found and found[0])
