"""Intent-model versions: the one place that writes them.

A version is a saved `IntentModel` under `<lake_root>/models/intents/<tenant>/v<version>/`
and its row in `nlu_models` (metrics, lineage, status, the promotion gate's decision). Both
writers of versions record them here: `POST /v1/nlu/train` (realtime/engine/intents.py) and
the retraining job (pipelines/nlu.py), which also retires here the versions trained on an
erased subject's labels. Numbers are allocated under a per-tenant advisory lock, in the
transaction that records the version: one number, one folder, whichever writer asks.

Going live is PostgreSQL first (`activate`, or `record(..., live=True)`), then `publish`:
the Redis key every API process reads per request, so the next request of any replica uses
the new version and requests in flight finish on the one they started with.

Everything in `IntentModels` blocks (psycopg connections as the app role, row-level security
on, as `chatlake.db.tenant_connection` opens them): the pipelines call it directly, the API
in a worker thread.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from psycopg import Connection
from psycopg.rows import DictRow
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from chatlake.db import tenant_connection
from chatlake.errors import NotFound
from chatlake.keyspace import TenantKeyspace
from nlu.classifier import IntentModel

LOCK = "select pg_advisory_xact_lock(hashtext(%s))"
NEXT_VERSION = "select coalesce(max(version), 0) + 1 as v from nlu_models"
INSERT = """insert into nlu_models (tenant_id, version, artifact_uri, metrics, lineage,
                                    status, gate)
            values (%s, %s, %s, %s, %s, %s, %s)"""
ACTIVATABLE = "select 1 from nlu_models where version = %s and status <> 'retired'"
DEACTIVATE = "update nlu_models set active = false where active"
ACTIVATE = "update nlu_models set active = true where version = %s"
RETIRE = "update nlu_models set status = 'retired', active = false where version = %s"
LIVE = "select version, lineage from nlu_models where active"
JUDGED = """select version from nlu_models where lineage->>'training_set_sha256' = %s
            order by version desc limit 1"""
NOT_RETIRED = """select version, active, lineage from nlu_models where status <> 'retired'
                 order by version"""
AUDIT = """insert into audit_log (tenant_id, actor, action, target, detail)
           values (%s, %s, %s, %s, %s)"""


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _audit(
    conn: Connection[DictRow],
    tenant_id: str,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None,
) -> None:
    conn.execute(AUDIT, (tenant_id, actor, action, target, _json(detail or {})))


def _make_live(conn: Connection[DictRow], version: int) -> None:
    conn.execute(DEACTIVATE)
    conn.execute(ACTIVATE, (version,))


def publish(redis: Redis | AsyncRedis, tenant_id: str, version: int | None) -> Any:
    """Point every API process at `version` of the tenant's model (None: no live model),
    once PostgreSQL says so. With the API's async client, await what this returns."""
    key = TenantKeyspace(tenant_id).nlu_model
    return redis.delete(key) if version is None else redis.set(key, version)


class IntentModels:
    """The tenant's intent-model versions: their files and their `nlu_models` rows."""

    def __init__(self, database_url: str, lake_root: str | Path) -> None:
        self.database_url = database_url  # the app role's: row-level security applies
        self.root = Path(lake_root) / "models" / "intents"

    def directory(self, tenant_id: str, version: int) -> Path:
        return self.root / tenant_id / f"v{version}"

    # --- writing ---------------------------------------------------------------------

    def record(
        self,
        tenant_id: str,
        model: IntentModel,
        *,
        actor: str,
        action: str,
        metrics: dict[str, Any],
        lineage: dict[str, Any],
        status: str = "promoted",
        gate: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
        live: bool = False,
    ) -> int:
        """Save `model` as the tenant's next version and record it, audited as `action`
        by `actor` (with `detail`); `live`: it becomes the active version in the same
        transaction (then `publish` it). Returns the version."""
        with tenant_connection(self.database_url, tenant_id) as conn:
            conn.execute(LOCK, (f"nlu-models:{tenant_id}",))
            row = conn.execute(NEXT_VERSION).fetchone()
            assert row is not None
            version = int(row["v"])
            directory = self.directory(tenant_id, version)
            model.save(directory)
            conn.execute(
                INSERT,
                (tenant_id, version, str(directory), _json(metrics), _json(lineage), status,
                 _json(gate) if gate is not None else None),
            )  # fmt: skip
            if live:
                _make_live(conn, version)
            _audit(conn, tenant_id, actor, action, str(version), detail)
        return version

    def activate(self, tenant_id: str, version: int, actor: str) -> None:
        """Make `version` the live one in PostgreSQL, audited (then `publish` it). A
        version never recorded, or retired (its files are gone), is NotFound."""
        with tenant_connection(self.database_url, tenant_id) as conn:
            if conn.execute(ACTIVATABLE, (version,)).fetchone() is None:
                raise NotFound(f"model version {version} not found")
            _make_live(conn, version)
            _audit(conn, tenant_id, actor, "nlu.activated", str(version), None)

    def retire(
        self, tenant_id: str, versions: list[int], actor: str, detail: dict[str, Any]
    ) -> None:
        """Retire `versions` for good (never live again, each audited), then delete their
        files, once PostgreSQL no longer points at them. A retired live version leaves
        none live: record (and publish) a replacement, or publish None."""
        with tenant_connection(self.database_url, tenant_id) as conn:
            for version in versions:
                conn.execute(RETIRE, (version,))
                _audit(conn, tenant_id, actor, "nlu.retired", str(version), detail)
        for version in versions:
            shutil.rmtree(self.directory(tenant_id, version), ignore_errors=True)

    # --- reading ---------------------------------------------------------------------

    def load(self, tenant_id: str, version: int) -> IntentModel:
        return IntentModel.load(self.directory(tenant_id, version))

    def live(self, tenant_id: str) -> dict[str, Any] | None:
        """The active version's number and lineage, if one is."""
        with tenant_connection(self.database_url, tenant_id) as conn:
            return conn.execute(LIVE).fetchone()

    def judged(self, tenant_id: str, training_set_sha256: str) -> int | None:
        """The newest version trained on exactly this training set, if any."""
        with tenant_connection(self.database_url, tenant_id) as conn:
            row = conn.execute(JUDGED, (training_set_sha256,)).fetchone()
        return int(row["version"]) if row else None

    def trained_on(self, tenant_id: str, event_ids: set[str]) -> list[dict[str, Any]]:
        """The versions not retired that learnt from one of the labels `event_ids`
        (number and whether live), oldest first."""
        with tenant_connection(self.database_url, tenant_id) as conn:
            rows = conn.execute(NOT_RETIRED).fetchall()
        return [
            {"version": row["version"], "active": row["active"]}
            for row in rows
            if set(row["lineage"].get("label_event_ids", [])) & event_ids
        ]

    def traces(self, tenant_id: str, event_ids: set[str], words: set[str]) -> list[str]:
        """What still holds a subject: versions not retired trained on their labels
        (`event_ids`), and model files whose vocabulary (or any other text) has one of
        their words."""
        found = [
            f"model version {row['version']} (trained on the subject's labels)"
            for row in (self.trained_on(tenant_id, event_ids) if event_ids else [])
        ]
        root = self.root / tenant_id
        for path in sorted(root.rglob("*")) if words and root.exists() else []:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    terms = {
                        t
                        for name in data.files
                        if name.endswith("_terms")
                        for term in data[name].tolist()
                        for t in str(term).split()
                    }
                held = terms & words
            elif path.is_file():
                held = {w for w in words if w in path.read_text(errors="replace").lower()}
            else:
                continue
            if held:
                found.append(f"model file {path.relative_to(root.parent)}")
        return found
