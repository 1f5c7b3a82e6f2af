"""Retention: each tenant keeps `retention_days` of conversations (default 90), no tenant
more than the platform's ceiling (`CHATLAKE_LAKE_RETENTION_DAYS`).

Enforced nightly by the `lake_retention` job (and `chatlake lake retention`) with erasure's
guarantees:
- the lake: one DELETE per bronze and silver table over every tenant's expired days, then
  the files that held them are deleted at once and the log is cleaned, so no older version
  stays readable (lake/maintenance.py, lake/erasure.py), all under the table's cleaning
  lock (lake/locks.py) so that a running ingest worker neither loses a file it is about to
  commit nor commits against the log being cleaned (it reloads from the checkpoint);
- the warehouse: the per-message and per-conversation marts (the ones with a `user_key`)
  lose the same days, then the DuckDB file is rewritten. The daily aggregates
  (`fct_tenant_daily`, `fct_intent_performance`, `fct_model_usage`) hold counts, no
  person, and stay for trends and billing;
- PostgreSQL: review-queue items last seen and labels made before the cutoff (the
  utterances they point to have left silver, so training could not use them anyway);
- Redis: conversation state expires on its own after `CHATLAKE_CONVERSATION_TTL_DAYS`
  without activity; a tenant that keeps fewer days loses its conversations idle for
  longer (their state, recent messages and index entries), then the append-only file is
  rewritten;
- the audit log: one `compliance.retention` entry per tenant that lost rows.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb
from redis import Redis

from chatlake.db import owner_connection
from chatlake.embedded import Services
from chatlake.keyspace import TenantKeyspace, redis_sync_client
from chatlake.runlock import pipeline_lock
from chatlake.settings import Settings
from chatlake.subject_keys import prune_subject_keys, rewrite_aof
from chatlake.warehouse import rewrite_warehouse, write_warehouse
from lake.maintenance import apply_retention

PER_PERSON_MARTS = ("fct_messages", "fct_conversations")


def tenant_retention(database_url: str) -> dict[str, int]:
    """Every tenant's retention in days (read as the schema owner: a platform job)."""
    with owner_connection(database_url) as conn:
        rows = conn.execute("select tenant_id::text, retention_days from tenants").fetchall()
    return {row["tenant_id"]: row["retention_days"] for row in rows}


def expire_warehouse(settings: Settings, cutoffs: dict[str, date]) -> dict[str, int]:
    """Delete the expired days of the per-person marts; rewrite the file if any went."""
    if not settings.warehouse.exists() or not cutoffs:
        return {}
    # The marts' single DuckDB writer: queue behind (or inside) any pipeline run.
    what = f"retention (pid {os.getpid()})"
    with pipeline_lock(settings.home, what):
        return _expire_warehouse(settings, cutoffs, what)


def _expire_warehouse(settings: Settings, cutoffs: dict[str, date], what: str) -> dict[str, int]:
    deleted: dict[str, int] = {}
    with write_warehouse(settings, what) as connection:
        if connection is None:
            return {}
        tables = {r[0] for r in connection.execute("show tables").fetchall()}
        for table in PER_PERSON_MARTS:
            if table not in tables:
                continue
            total = 0
            for tenant, cutoff in cutoffs.items():
                rows = connection.execute(
                    f"delete from {table} where tenant_id = ? and day < ?", [tenant, cutoff]
                ).fetchall()
                total += int(rows[0][0]) if rows else 0
            deleted[table] = total
    if any(deleted.values()):
        rewrite_warehouse(settings, what)
    return deleted


def expire_redis(redis: Redis, tenant_id: str, cutoff: date) -> int:
    """Delete the tenant's conversations idle since before `cutoff` (by their users'
    activity indexes); returns how many went."""
    keys = TenantKeyspace(tenant_id)
    before_ms = int(datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC).timestamp() * 1000)
    expired = 0
    for index in redis.scan_iter(match=keys.user_conversations("*"), count=1000):
        idle: Any = redis.zrangebyscore(index, "-inf", f"({before_ms}")
        if not idle:
            continue
        doomed = []
        for raw in idle:
            conversation = raw.decode() if isinstance(raw, bytes) else str(raw)
            doomed += [keys.conversation(conversation), keys.messages(conversation)]
        redis.delete(*doomed)
        redis.zremrangebyscore(index, "-inf", f"({before_ms}")
        expired += len(idle)
    return expired


def enforce_retention(
    settings: Settings, today: date | None = None, actor: str = "retention-job"
) -> dict[str, Any]:
    """Apply every tenant's retention to the lake and the warehouse, and audit it."""
    today = today or datetime.now(UTC).date()
    database_url = Services(settings).endpoints().database_url
    ceiling = settings.lake_retention_days
    policies = tenant_retention(database_url)
    effective = {tenant: min(days, ceiling) for tenant, days in policies.items()}
    lake = apply_retention(settings.lake_root, ceiling, today, effective)
    cutoffs = {tenant: today - timedelta(days=days) for tenant, days in effective.items()}
    warehouse = expire_warehouse(settings, cutoffs)
    redis_expired: dict[str, int] = {}
    shorter = {t: c for t, c in cutoffs.items()
               if effective[t] < settings.conversation_ttl_days}  # fmt: skip
    if shorter:
        redis = redis_sync_client(Services(settings).endpoints().redis_url)
        try:
            for tenant, cutoff in shorter.items():
                if count := expire_redis(redis, tenant, cutoff):
                    redis_expired[tenant] = count
            if redis_expired:
                rewrite_aof(redis)
        finally:
            redis.close()
    by_tenant: dict[str, int] = {}
    for report in lake.values():
        for tenant, rows in report["by_tenant"].items():
            by_tenant[tenant] = by_tenant.get(tenant, 0) + rows
    postgresql: dict[str, dict[str, int]] = {}
    with owner_connection(database_url) as conn:
        for tenant, cutoff in cutoffs.items():
            review = conn.execute(
                "delete from nlu_review_items where tenant_id = %s and last_seen < %s",
                (tenant, cutoff),
            ).rowcount
            labels = conn.execute(
                "delete from nlu_labels where tenant_id = %s and created_at < %s", (tenant, cutoff)
            ).rowcount
            if review or labels:
                postgresql[tenant] = {"nlu_review_items": review, "nlu_labels": labels}
                by_tenant.setdefault(tenant, 0)
        for tenant in redis_expired:
            by_tenant.setdefault(tenant, 0)
        holding = {tenant: {row["user_key"] for row in conn.execute(
            "select distinct user_key from nlu_review_items where tenant_id = %s", (tenant,))}
            for tenant in postgresql}  # fmt: skip
    if holding:  # expired review texts: destroy the keys that could open old copies
        redis = redis_sync_client(Services(settings).endpoints().redis_url)
        try:
            if sum(prune_subject_keys(redis, t, keep) for t, keep in holding.items()):
                rewrite_aof(redis)
        finally:
            redis.close()
    with owner_connection(database_url) as conn:
        for tenant, rows in sorted(by_tenant.items()):
            if tenant not in policies:
                continue  # a partition left by a tenant that no longer exists
            conn.execute(
                """insert into audit_log (tenant_id, actor, action, target, detail)
                   values (%s, %s, 'compliance.retention', %s, %s)""",
                (tenant, actor, cutoffs[tenant].isoformat(),
                 Jsonb({"retention_days": effective[tenant], "before": cutoffs[tenant].isoformat(),
                        "lake_rows_deleted": rows,
                        "postgresql_rows_deleted": postgresql.get(tenant, {}),
                        "redis_conversations_deleted": redis_expired.get(tenant, 0)})),
            )  # fmt: skip
    return {
        "today": today.isoformat(),
        "ceiling_days": ceiling,
        "tenants": {
            tenant: {
                "retention_days": days,
                "before": cutoffs[tenant].isoformat(),
                "lake_rows_deleted": by_tenant.get(tenant, 0),
            }
            for tenant, days in sorted(effective.items())
        },
        "lake": lake,
        "warehouse_rows_deleted": warehouse,
        "postgresql_rows_deleted": postgresql,
        "redis_conversations_deleted": redis_expired,
    }
