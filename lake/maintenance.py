"""Keep the lake tables fast to read: compact small files, checkpoint, vacuum.

At low traffic every ingest batch is a small commit with small files; compaction rewrites
them into few large ones (a commit of its own, so readers never see a partial state), a
checkpoint lets readers skip replaying the log, and vacuum deletes files no version within
the retention window still needs. Every step leaves its trace in the Delta history.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from deltalake import CommitProperties

from lake.schemas import TABLES
from lake.writer import open_table, table_uri

DEFAULT_RETENTION_HOURS = 168  # Delta's default: time travel a week back keeps working


def maintain_table(
    lake_root: str, name: str, retention_hours: int = DEFAULT_RETENTION_HOURS
) -> dict[str, Any]:
    table = open_table(table_uri(lake_root, name))
    if table is None:
        return {"table": name, "exists": False}
    files_before = len(table.file_uris())
    metadata = {"maintenance": "chatlake lake maintain"}
    compacted = table.optimize.compact(commit_properties=CommitProperties(custom_metadata=metadata))
    table.create_checkpoint()
    table.cleanup_metadata()
    vacuumed = table.vacuum(
        retention_hours=retention_hours,
        dry_run=False,
        enforce_retention_duration=retention_hours >= DEFAULT_RETENTION_HOURS,
        commit_properties=CommitProperties(custom_metadata=metadata),
    )
    return {
        "table": name,
        "exists": True,
        "version": table.version(),
        "files_before": files_before,
        "files_after": len(table.file_uris()),
        "files_added": compacted.get("numFilesAdded", 0),
        "files_removed": compacted.get("numFilesRemoved", 0),
        "files_vacuumed": len(vacuumed),
    }


SILVER_TABLES = ("silver/turns", "silver/conversation_events")


def maintain(
    lake_root: str, retention_hours: int = DEFAULT_RETENTION_HOURS
) -> list[dict[str, Any]]:
    """Every lake table: bronze, and silver where the pipelines have built it."""
    return [maintain_table(lake_root, name, retention_hours) for name in (*TABLES, *SILVER_TABLES)]


def apply_retention(
    lake_root: str, keep_days: int, today: date | None = None
) -> dict[str, dict[str, int]]:
    """Delete the rows of every day older than `keep_days` from bronze and silver, with
    erasure's guarantees: the files that held them are deleted at once and the log is
    cleaned, so no older version that held them stays readable (lake/erasure.py)."""
    from lake.erasure import scrub_table

    cutoff = (today or datetime.now(UTC).date()) - timedelta(days=keep_days)
    deleted: dict[str, dict[str, int]] = {}
    for name in (*TABLES, *SILVER_TABLES):
        table = open_table(table_uri(lake_root, name))
        if table is None:
            continue
        metrics = table.delete(
            f"date < '{cutoff.isoformat()}'",
            commit_properties=CommitProperties(custom_metadata={"retention": f"{keep_days} days"}),
        )
        rows = int(metrics.get("num_deleted_rows", 0))
        deleted[name] = {"rows_deleted": rows, **(scrub_table(table) if rows else {})}
    return deleted
