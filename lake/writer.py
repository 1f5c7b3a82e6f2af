"""The idempotent writer: one Delta commit per batch, tagged with an app transaction.

A batch is committed with `Transaction(app_id, version)`; before writing, the writer reads
`DeltaTable.transaction_version(app_id)` and skips a batch whose version is already in the
log. Retrying a batch after a crash therefore never writes its rows twice.

Faults it rides out (each attempt is made under the table's writer lock, lake/locks.py):
- its cached view of the table going stale, or the log entries it would replay being
  cleaned away by erasure, retention or maintenance: before every commit it refreshes the
  view, and on any Delta error it reloads from the latest checkpoint;
- a concurrent writer: delta-rs rebases a commit onto the versions that won the race and
  retries it by itself when they do not conflict (appends with other app ids never do);
  a real conflict (`CommitFailedError`, e.g. the same app transaction committed by another
  process) fails the attempt, and the writer reloads, re-checks its app transaction and
  tries again, a bounded number of times, with a short backoff;
- a failed attempt's data files: written but referenced by no version, they would hold
  end users' texts out of reach of erasure; they are deleted at once (the files of this
  batch, recognised by their keys, that the reloaded table does not reference).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from lake import locks
from lake.schemas import PARTITION_BY, TABLE_SCHEMAS

COMMIT_ATTEMPTS = 5
_log = structlog.get_logger("chatlake.lake.writer")


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


def referenced_files(table: DeltaTable) -> set[Path]:
    """The local paths of the data files the table's loaded version references."""
    return {Path(unquote(uri.removeprefix("file://"))) for uri in table.file_uris()}


class DeltaAppender:
    """Appends batches to one table, each commit tagged with `Transaction(app_id, version)`.

    `key` names the column that identifies a row (unique across writers): it tells this
    writer's uncommitted files from a concurrent writer's.
    """

    def __init__(self, lake_root: str, name: str, key: str = "event_id") -> None:
        self.name = name
        self.key = key
        self.uri = table_uri(lake_root, name)
        self.table = ensure_table(self.uri, TABLE_SCHEMAS[name])

    def reload(self) -> None:
        """A fresh view of the table: the latest checkpoint and the commits after it."""
        self.table = ensure_table(self.uri, TABLE_SCHEMAS[self.name])

    def refresh(self) -> None:
        """Bring the view up to the latest version; reload it when the log entries it
        would replay are gone (erasure and retention delete them)."""
        try:
            self.table.update_incremental()
        except DeltaError as exc:
            _log.info("lake_table_reloaded", table=self.name, error=str(exc))
            self.reload()

    def committed_version(self, app_id: str, refresh: bool = False) -> int:
        """The last batch version `app_id` committed here (0 when none)."""
        if refresh:
            self.refresh()
        return self.table.transaction_version(app_id) or 0

    def append(
        self, rows: pa.Table, app_id: str, version: int, metadata: dict[str, str] | None = None
    ) -> bool:
        """Append `rows` as one commit unless `app_id` already committed `version`.

        Returns True when this call wrote the rows, False when they were already there.
        Raises the last error when `COMMIT_ATTEMPTS` attempts failed.
        """

        def select(table: DeltaTable) -> tuple[pa.Table, list[Transaction]] | None:
            if (table.transaction_version(app_id) or 0) >= version:
                return None
            return rows, [Transaction(app_id=app_id, version=version)]

        return self.append_selected(select, {"writer": app_id, "batch": str(version),
                                             **(metadata or {})})  # fmt: skip

    def append_selected(
        self,
        select: Callable[[DeltaTable], tuple[pa.Table, list[Transaction]] | None],
        metadata: dict[str, str] | None = None,
    ) -> bool:
        """One commit of what `select` picks, given the table's latest version, with the
        app transactions it names; nothing when it picks None. `select` runs again on
        every attempt (after a conflict the table holds what won it), so it can leave out
        what is already there, as `append` does by one app transaction's version.

        Returns True when a commit was made. Raises the last error when `COMMIT_ATTEMPTS`
        attempts failed.
        """
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            with locks.writing(self.uri):
                self.refresh()
                picked = select(self.table)
                if picked is None:
                    return False
                rows, transactions = picked
                started = time.time()
                try:
                    self._write(rows, transactions, metadata)
                    return True
                except DeltaError as exc:
                    removed = self._remove_uncommitted(rows, started)
                    _log.warning(
                        "lake_commit_failed",
                        table=self.name,
                        transactions={t.app_id: t.version for t in transactions[:4]},
                        attempt=attempt,
                        files_removed=removed,
                        error=str(exc),
                    )
                    if attempt == COMMIT_ATTEMPTS:
                        raise
            time.sleep(min(0.05 * 2**attempt, 1.0))  # let the competing commit finish
        raise AssertionError("unreachable")

    def _write(
        self, rows: pa.Table, transactions: list[Transaction], metadata: dict[str, str] | None
    ) -> None:
        write_deltalake(
            self.table,
            rows,
            mode="append",
            partition_by=PARTITION_BY,
            schema_mode="merge",  # columns added to the event since the table was made
            commit_properties=CommitProperties(
                app_transactions=transactions,
                custom_metadata=metadata or {},
            ),
        )

    def _remove_uncommitted(self, rows: pa.Table, since: float) -> int:
        """Delete the data files a failed attempt to commit `rows` left behind: in the
        batch's partitions, written since the attempt began, referenced by no version of
        the reloaded table, and holding only keys of this batch (a concurrent writer's
        files awaiting their commit hold other keys). Local lakes only: on object storage
        vacuum removes them once they are older than its retention."""
        root = locks.local_path(self.uri)
        if root is None:
            return 0
        try:
            self.reload()  # if the commit did land after all, its files are referenced now
        except DeltaError:
            return 0  # cannot tell what is referenced: delete nothing
        referenced = referenced_files(self.table)
        keys = pc.unique(rows.column(self.key))
        removed = 0
        partitions = rows.select(PARTITION_BY).group_by(PARTITION_BY).aggregate([])
        for values in partitions.to_pylist():
            directory = root.joinpath(*(f"{col}={values[col]}" for col in PARTITION_BY))
            for path in directory.glob("*.parquet") if directory.is_dir() else []:
                if path in referenced or path.stat().st_mtime < since - 2:
                    continue
                held = pq.read_table(path, columns=[self.key]).column(self.key)
                if held.length() and pc.all(pc.is_in(held, value_set=keys)).as_py():
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed
