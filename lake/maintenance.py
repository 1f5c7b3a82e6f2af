"""Keep the lake tables fast to read: compact small files, checkpoint, vacuum.

At low traffic every ingest batch is a small commit with small files; compaction rewrites
them into few large ones (a commit of its own, so readers never see a partial state), a
checkpoint lets readers skip replaying the log, and vacuum deletes files no version within
the retention window still needs. Every step leaves its trace in the Delta history.

The checkpoint, log clean-up and vacuum run under the table's cleaning lock
(lake/locks.py), so they never delete a file a writer is about to commit, nor the log a
writer is committing against; retention's DELETE and clean-up too (lake/erasure.py).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from deltalake import CommitProperties, DeltaTable

from lake import locks
from lake.schemas import TABLE_SCHEMAS
from lake.writer import open_table, table_uri

DEFAULT_RETENTION_HOURS = 168  # Delta's default: time travel a week back keeps working


def maintain_table(
    lake_root: str, name: str, retention_hours: int = DEFAULT_RETENTION_HOURS
) -> dict[str, Any]:
    uri = table_uri(lake_root, name)
    table = open_table(uri)
    if table is None:
        return {"table": name, "exists": False}
    files_before = len(table.file_uris())
    metadata = {"maintenance": "chatlake lake maintain"}
    compacted = table.optimize.compact(commit_properties=CommitProperties(custom_metadata=metadata))
    with locks.cleaning(uri):
        table.update_incremental()
        table.create_checkpoint()  # before the clean-up: readers load from it
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


def maintain(
    lake_root: str, retention_hours: int = DEFAULT_RETENTION_HOURS
) -> list[dict[str, Any]]:
    """Every lake table: bronze, and silver where the pipelines have built it."""
    return [maintain_table(lake_root, name, retention_hours) for name in TABLE_SCHEMAS]


def retention_predicate(cutoffs: dict[str, date], default_cutoff: date) -> str:
    """Rows older than their tenant's cutoff (`cutoffs`), or than `default_cutoff` in the
    partitions of tenants without a policy of their own."""
    from lake.erasure import quoted

    clauses = [
        f"(tenant_id = {quoted(tenant)} AND date < '{cutoff.isoformat()}')"
        for tenant, cutoff in sorted(cutoffs.items())
    ]
    others = f"date < '{default_cutoff.isoformat()}'"
    if cutoffs:
        listed = ", ".join(quoted(tenant) for tenant in sorted(cutoffs))
        others = f"(tenant_id NOT IN ({listed}) AND {others})"
    return " OR ".join([*clauses, others])


def _expiring_rows(table: Any, cutoffs: dict[str, date], default_cutoff: date) -> dict[str, int]:
    """Rows per tenant that the retention DELETE removes: whole (tenant, day) partitions,
    so the counts come from the log's file statistics without reading any data."""
    actions = table.get_add_actions(flatten=True)
    tenants = actions["partition.tenant_id"].to_pylist()
    days = actions["partition.date"].to_pylist()
    records = actions["num_records"].to_pylist()
    expiring: dict[str, int] = {}
    for tenant, day, count in zip(tenants, days, records, strict=True):
        if date.fromisoformat(str(day)) < cutoffs.get(tenant, default_cutoff):
            expiring[tenant] = expiring.get(tenant, 0) + int(count or 0)
    return expiring


def apply_retention(
    lake_root: str,
    keep_days: int,
    today: date | None = None,
    tenant_days: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Delete from bronze and silver every day older than its tenant's retention
    (`tenant_days`; `keep_days` for tenants without one, and as the ceiling for all), with
    erasure's guarantees: one DELETE per table, then the files that held the rows are
    deleted at once and the log is cleaned, so no older version that held them stays
    readable (lake/erasure.py)."""
    from lake.erasure import scrub_table

    today = today or datetime.now(UTC).date()
    default_cutoff = today - timedelta(days=keep_days)
    cutoffs = {
        tenant: max(today - timedelta(days=days), default_cutoff)
        for tenant, days in (tenant_days or {}).items()
    }
    predicate = retention_predicate(cutoffs, default_cutoff)
    deleted: dict[str, dict[str, Any]] = {}
    for name in TABLE_SCHEMAS:
        uri = table_uri(lake_root, name)
        if open_table(uri) is None:
            continue
        with locks.cleaning(uri):
            table = DeltaTable(uri)  # loaded under the lock: every finished commit in view
            expiring = _expiring_rows(table, cutoffs, default_cutoff)
            if not expiring:
                deleted[name] = {"rows_deleted": 0, "by_tenant": {}}
                continue
            metrics = table.delete(
                predicate,
                commit_properties=CommitProperties(custom_metadata={"retention": "per tenant"}),
            )
            rows = int(metrics.get("num_deleted_rows", 0))
            deleted[name] = {"rows_deleted": rows, "by_tenant": expiring, **scrub_table(table)}
    return deleted
