"""Erasure requests: recorded in PostgreSQL (subject as a digest), carried out by
`compliance.erasure.erase`, certified, and audited."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from chatlake.db import owner_connection
from chatlake.embedded import Services
from chatlake.errors import ChatlakeError
from chatlake.keyspace import redis_sync_client
from chatlake.settings import Settings
from compliance.erasure import erase, subject_digest


def run_erasure(
    settings: Settings, tenant_id: str, user_id: str, actor: str, request_id: str | None = None
) -> dict[str, Any]:
    endpoints = Services(settings).endpoints()
    request_id = request_id or uuid.uuid4().hex
    digest = subject_digest(tenant_id, user_id)
    with owner_connection(endpoints.database_url) as conn:
        if (
            conn.execute("select 1 from tenants where tenant_id = %s", (tenant_id,)).fetchone()
            is None
        ):
            raise ChatlakeError(f"no tenant {tenant_id}")
        conn.execute(
            """insert into erasure_requests (request_id, tenant_id, subject_digest, status,
                                             requested_by)
               values (%s, %s, %s, 'running', %s)
               on conflict (request_id) do update set status = 'running'""",
            (request_id, tenant_id, digest, actor),
        )
        conn.execute(
            """insert into audit_log (tenant_id, actor, action, target, detail)
               values (%s, %s, 'compliance.erasure.requested', %s, %s)""",
            (tenant_id, actor, request_id, Jsonb({"subject_digest": digest})),
        )
        conn.commit()
    redis = redis_sync_client(endpoints.redis_url)
    try:
        certificate = erase(settings, redis, tenant_id, user_id, request_id)
    except Exception as exc:
        _finish(endpoints.database_url, request_id, tenant_id, actor, "failed",
                {"error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
        raise
    finally:
        redis.close()
    status = "completed" if certificate["verification"]["passed"] else "failed"
    _finish(endpoints.database_url, request_id, tenant_id, actor, status, certificate)
    return certificate


def _finish(
    database_url: str,
    request_id: str,
    tenant_id: str,
    actor: str,
    status: str,
    certificate: dict[str, Any],
) -> None:
    import hashlib

    digest = hashlib.sha256(orjson.dumps(certificate, option=orjson.OPT_SORT_KEYS)).hexdigest()
    with owner_connection(database_url) as conn:
        conn.execute(
            """update erasure_requests set status = %s, finished_at = now(), certificate = %s
               where request_id = %s""",
            (status, Jsonb(certificate), request_id),
        )
        conn.execute(
            """insert into audit_log (tenant_id, actor, action, target, detail)
               values (%s, %s, %s, %s, %s)""",
            (tenant_id, actor, f"compliance.erasure.{status}", request_id,
             Jsonb({"certificate_sha256": digest})),
        )  # fmt: skip
