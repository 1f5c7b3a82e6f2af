"""Erasing one data subject from the lake, so that no file and no readable table version
still holds them.

For each table that holds the subject (bronze by `user_id`, silver by `user_key`), in the
tenant's partitions only:
1. a Delta DELETE rewrites the files that held the subject's rows without them (a commit
   of its own; other users' rows are carried over unchanged);
2. every data file of the tenant's partitions that the latest version does not reference
   is deleted from storage, whatever its age: what the DELETE removed, compaction leftovers
   kept for time travel, and the orphans of commits that failed or were killed, all of
   which can hold the subject. A tenant-scoped vacuum; every older version becomes
   unreadable;
3. a checkpoint is written and the log entries before it are deleted, with the older
   checkpoints: their add actions carried column statistics (min/max values) of the
   removed files, which can hold the subject's id or text in the clear. Readers and
   writers load from that checkpoint, which is written before anything is deleted.

All three run under the table's cleaning lock (lake/locks.py): writers hold it shared from
their first data file to their commit, so while erasure holds it no writer is between the
two, and an unreferenced file can only be an orphan; and no writer commits against a log
being cleaned. (An age limit instead would leave a fresh orphan holding the subject, and
the erasure could not certify.)

Every step is idempotent: run again, a DELETE finds nothing, and the clean-up of files and
log entries finds only what is still there, so an interrupted erasure resumes to the same
end. The report lists per table the versions, rows and files involved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable

from chatlake.errors import ChatlakeError
from lake import locks
from lake.datasets import arrow_dataset
from lake.schemas import (
    CONVERSATION_EVENTS_TABLE,
    MESSAGES_TABLE,
    SILVER_CONVERSATION_EVENTS_TABLE,
    TURNS_TABLE,
)
from lake.writer import open_table, referenced_files, table_uri

# table -> the column that identifies the subject in it
SUBJECT_COLUMNS = {
    MESSAGES_TABLE: "user_id",
    CONVERSATION_EVENTS_TABLE: "user_id",
    TURNS_TABLE: "user_key",
    SILVER_CONVERSATION_EVENTS_TABLE: "user_key",
}
FAILPOINT_ENV = "CHATLAKE_ERASURE_FAILPOINT"


def failpoint(name: str) -> None:
    """Crash here, as kill -9 would, when a test asks for it (erasure must resume)."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


_LOG_FILE = re.compile(r"^(\d{20})\.(json|checkpoint\.parquet|checkpoint\.\d+\.\d+\.parquet)$")


def quoted(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def subject_predicate(tenant_id: str, column: str, subject: str, salt: str) -> str:
    """The DELETE predicate. It is recorded in the commit, which stays in the log, so it
    names the subject only by a salted hash (the salt is the request id)."""
    digest = hashlib.sha256((subject + salt).encode()).hexdigest()
    return (
        f"tenant_id = {quoted(tenant_id)} AND "
        f"encode(sha256(concat({column}, {quoted(salt)})), 'hex') = '{digest}'"
    )


def _commit_actions(path: Path) -> list[dict[str, Any]]:
    """The actions of one commit file: one JSON object per "\n"-ended line. Not
    `splitlines()`: JSON strings may hold U+2028, U+0085 and other characters that it
    takes for line ends (a message text's min/max statistics can)."""
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def _local_root(uri: str) -> Path:
    if "://" in uri and not uri.startswith("file://"):
        raise ChatlakeError(
            "erasure and retention delete lake files directly, which is built for a local "
            "lake only; with CHATLAKE_LAKE_URI on object storage they refuse to run"
        )
    return Path(uri.removeprefix("file://"))


def unreferenced_files(table: DeltaTable, tenant_id: str) -> list[Path]:
    """Data files in the tenant's partitions that the latest version does not reference."""
    root = _local_root(table.table_uri)
    live = referenced_files(table)
    partition = root / f"tenant_id={tenant_id}"
    if not partition.exists():
        return []
    return sorted(p for p in partition.rglob("*.parquet") if p not in live)


def _clean_log(table: DeltaTable) -> list[str]:
    """Checkpoint at the latest version and delete every log file before it."""
    table.create_checkpoint()
    version = table.version()
    log_dir = _local_root(table.table_uri) / "_delta_log"
    deleted = []
    for path in sorted(log_dir.iterdir()):
        match = _LOG_FILE.match(path.name)
        if match is None:
            continue
        if int(match.group(1)) < version:  # later commits (a concurrent writer's) stay
            path.unlink(missing_ok=True)
            deleted.append(path.name)
    return deleted


def erase_from_table(
    lake_root: str, name: str, tenant_id: str, subject: str, request_id: str
) -> dict[str, Any]:
    """Remove every row of `subject` (the table's subject column) in `tenant_id`."""
    uri = table_uri(lake_root, name)
    if open_table(uri) is None:
        return {"table": name, "exists": False}
    with locks.cleaning(uri):
        table = DeltaTable(uri)  # loaded under the lock: every finished commit in view
        column = SUBJECT_COLUMNS[name]
        before = table.version()
        earlier = _rows_deleted_by(table, request_id)  # by an interrupted run of this request
        metrics = table.delete(
            subject_predicate(tenant_id, column, subject, request_id),
            commit_properties=CommitProperties(custom_metadata={"erasure_request": request_id}),
        )
        deleted_rows = int(metrics.get("num_deleted_rows", 0))
        failpoint("lake_deleted")
        deleted_files = scrub_partitions(table, [tenant_id])
        log_files = _clean_log(table)
    return {
        "table": name,
        "exists": True,
        "version_before": before,
        "version_after": table.version(),
        "rows_deleted": deleted_rows + earlier,
        "data_files_deleted": deleted_files,
        "log_files_deleted": len(log_files),
    }


def _rows_deleted_by(table: DeltaTable, request_id: str) -> int:
    """Rows that DELETE commits of this request still in the log removed (a run killed
    between its DELETE and the log clean-up leaves its commit there)."""
    total = 0
    for commit in table.history():
        if commit.get("erasure_request") == request_id and commit.get("operation") == "DELETE":
            metrics = commit.get("operationMetrics") or {}
            total += int(metrics.get("num_deleted_rows", 0))
    return total


def scrub_partitions(table: DeltaTable, tenant_ids: list[str]) -> list[str]:
    """Delete the tenants' data files that the latest version does not reference, of any
    age. Only under `locks.cleaning` (see the module's docstring): outside it, a
    concurrent writer's files awaiting their commit would look the same. Returns their
    paths relative to the table."""
    root = _local_root(table.table_uri)
    table.update_incremental()  # a commit that landed since the table was loaded
    deleted = []
    for tenant_id in tenant_ids:
        for path in unreferenced_files(table, tenant_id):
            path.unlink(missing_ok=True)
            deleted.append(str(path.relative_to(root)))
    return deleted


def scrub_table(table: DeltaTable) -> dict[str, int]:
    """Every tenant partition scrubbed, then the log cleaned: after a DELETE that spans
    tenants (retention), no removed file and no older version stays readable. Only under
    `locks.cleaning`."""
    root = _local_root(table.table_uri)
    tenants = [p.name.removeprefix("tenant_id=") for p in root.glob("tenant_id=*") if p.is_dir()]
    files = scrub_partitions(table, tenants)
    return {"data_files_deleted": len(files), "log_files_deleted": len(_clean_log(table))}


def subject_remains(lake_root: str, name: str, tenant_id: str, subject: str) -> int:
    """Rows of `subject` still readable in the table's latest version (0 after erasure)."""
    table = open_table(table_uri(lake_root, name))
    if table is None:
        return 0
    column = SUBJECT_COLUMNS[name]
    rows = arrow_dataset(table).to_table(columns=["tenant_id", column])
    tenants = rows["tenant_id"].cast(pa.string()).to_pylist()
    subjects = rows[column].cast(pa.string()).to_pylist()
    return sum(1 for t, s in zip(tenants, subjects, strict=True) if t == tenant_id and s == subject)


def versions_holding(lake_root: str, name: str, tenant_id: str, subject: str) -> list[int]:
    """The readable table versions in which the subject still has rows (after erasure:
    none; versions written after it may stay readable, they never held the subject).

    One pass, each version loaded once: a version whose log another process cleans while
    we look (retention, a concurrent erasure) is no longer readable, so it holds nobody."""
    holding = []
    column = SUBJECT_COLUMNS[name]
    for version, table in _readable_tables(lake_root, name, ["tenant_id", column]):
        tenants = table["tenant_id"].cast(pa.string()).to_pylist()
        subjects = table[column].cast(pa.string()).to_pylist()
        if any(t == tenant_id and s == subject for t, s in zip(tenants, subjects, strict=True)):
            holding.append(version)
    return holding


def log_mentions(lake_root: str, name: str, tenant_id: str, needles: list[str]) -> list[str]:
    """Log files whose entries about the tenant's partitions (file actions with their
    column statistics) or whose commit records mention any needle."""
    import pyarrow.parquet as pq

    log_dir = _local_root(table_uri(lake_root, name)) / "_delta_log"
    wanted = set(needles)
    found = []
    for path in sorted(log_dir.glob("*")) if log_dir.exists() else []:
        if path.suffix == ".json":
            actions = _commit_actions(path)
        elif path.name.endswith(".parquet"):
            actions = [
                {k: v for k, v in row.items() if v is not None}
                for row in pq.read_table(path).to_pylist()
            ]
        else:
            continue
        for action in actions:
            for kind, body in action.items():
                if not isinstance(body, dict):
                    continue
                values = body.get("partitionValues") or {}
                if isinstance(values, list):  # a checkpoint's map column: (key, value) pairs
                    values = dict(values)
                partition = values.get("tenant_id")
                if kind in ("add", "remove", "cdc") and partition not in (None, tenant_id):
                    continue  # another tenant's file: its statistics are not about ours
                if _values(body) & wanted:
                    found.append(path.name)
                    break
    return sorted(set(found))


def _values(body: Any) -> set[str]:
    """Every string value in a log action, its column statistics (a JSON string inside
    the action) included: a subject is found by an exact value, as statistics hold them,
    so a short user id never matches inside someone else's text."""
    if isinstance(body, str):
        if body.startswith("{") and '"minValues"' in body:
            try:
                return _values(json.loads(body))
            except ValueError:
                return {body}
        return {body}
    if isinstance(body, dict):
        return set().union(*(_values(v) for v in body.values())) if body else set()
    if isinstance(body, list | tuple):
        return set().union(*(_values(v) for v in body)) if body else set()
    return set()


def readable_versions(lake_root: str, name: str) -> list[int]:
    """The table versions that can still be loaded (after erasure: only the latest)."""
    return [version for version, _ in _readable_tables(lake_root, name, ["tenant_id"])]


def _readable_tables(
    lake_root: str, name: str, columns: list[str]
) -> Iterator[tuple[int, pa.Table]]:
    """(version, its rows' `columns`) for every version that still loads and reads."""
    table = open_table(table_uri(lake_root, name))
    if table is None:
        return
    for version in range(table.version() + 1):
        try:
            old = DeltaTable(table.table_uri, version=version)
            rows = arrow_dataset(old).to_table(columns=columns)
        except Exception:  # its log or files are gone: not readable, holds nothing
            continue
        yield version, rows
