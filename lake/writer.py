"""The idempotent writer: one Delta commit per batch, tagged with an app transaction.

A batch is committed with `Transaction(app_id, version)`; before writing, the writer reads
`DeltaTable.transaction_version(app_id)` and skips a batch whose version is already in the
log. Retrying a batch after a crash therefore never writes its rows twice.
"""

from __future__ import annotations

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from lake.schemas import PARTITION_BY, TABLES


def table_uri(lake_root: str, name: str) -> str:
    return f"{lake_root.rstrip('/')}/{name}"


def open_table(uri: str) -> DeltaTable | None:
    try:
        return DeltaTable(uri)
    except TableNotFoundError:
        return None


def ensure_table(uri: str, schema: pa.Schema) -> DeltaTable:
    """Create the table if it does not exist (safe to race: the loser just opens it)."""
    table = open_table(uri)
    if table is not None:
        return table
    try:
        return DeltaTable.create(uri, schema=schema, partition_by=PARTITION_BY, mode="ignore")
    except DeltaError:
        return DeltaTable(uri)


class DeltaAppender:
    """Appends batches to one table, each commit tagged with `Transaction(app_id, version)`."""

    def __init__(self, lake_root: str, name: str) -> None:
        self.name = name
        self.uri = table_uri(lake_root, name)
        self.table = ensure_table(self.uri, TABLES[name][1])

    def committed_version(self, app_id: str, refresh: bool = False) -> int:
        """The last batch version `app_id` committed here (0 when none)."""
        if refresh:
            self.table.update_incremental()
        return self.table.transaction_version(app_id) or 0

    def append(
        self, rows: pa.Table, app_id: str, version: int, metadata: dict[str, str] | None = None
    ) -> bool:
        """Append `rows` as one commit unless `app_id` already committed `version`.

        Returns True when this call wrote the rows, False when they were already there.
        """
        if self.committed_version(app_id) >= version:
            return False
        write_deltalake(
            self.table,
            rows,
            mode="append",
            partition_by=PARTITION_BY,
            schema_mode="merge",  # columns added to the event since the table was made
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id=app_id, version=version)],
                custom_metadata={"writer": app_id, "batch": str(version), **(metadata or {})},
            ),
        )
        return True
