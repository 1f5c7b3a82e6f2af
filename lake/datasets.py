"""Arrow datasets over Delta tables, read with Arrow's own filesystem.

`DeltaTable.to_pyarrow_dataset()` reads through a filesystem written in Python (deltalake's
`DeltaStorageHandler` inside `pyarrow.fs.PyFileSystem`): every read Arrow's I/O threads make
calls back into Python and needs the GIL. Two faults came of it here:
- DuckDB scanning such a dataset (dbt's sources, `lake.readers.duckdb_query`) deadlocks now
  and then: DuckDB's scan holds the GIL while it waits for Arrow's threads, which wait for
  the GIL (seen as a `dbt build` idle for good in `DatasetSource.stream`; duckdb/duckdb#16501
  is the same shape);
- at interpreter exit, Arrow's threads still calling into a finalizing Python abort the
  process (`terminate called without an active exception`, exit 134; apache/arrow#34314).
A local table is therefore read with `pyarrow.fs.LocalFileSystem` rooted at the table (no
Python on Arrow's threads); other stores keep deltalake's handler.
"""

from __future__ import annotations

from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pa_fs
from deltalake import DeltaTable

from lake.locks import local_path


def arrow_dataset(table: DeltaTable, **options: Any) -> ds.Dataset:
    """`table.to_pyarrow_dataset(**options)`, on Arrow's native filesystem when local."""
    root = local_path(table.table_uri)
    if root is not None and "filesystem" not in options:
        options["filesystem"] = pa_fs.SubTreeFileSystem(str(root), pa_fs.LocalFileSystem())
    return table.to_pyarrow_dataset(**options)
