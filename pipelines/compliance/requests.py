"""Erasure requests: recorded in PostgreSQL (subject as a keyed digest), queued with the
other compliance jobs (chatlake/jobs.py), carried out by `pipelines.compliance.erasure.erase`,
certified, and audited.

An API request launches the `erase_subject` Dagster job (pipelines/defs/compliance/erasure.py)
when a Dagster webserver is configured (`CHATLAKE_DAGSTER_URL`, which `up` sets), else a
`chatlake erase` process. Neither carries the user id in the clear: Dagster stores the
run configuration and any user can read a process's command line, so the id is sealed
(Fernet) under a key of the request's own that lives in Redis only, and that key is
destroyed, and Redis's append-only file rewritten, once the erasure completes. What
Dagster keeps is then unreadable.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from chatlake.db import owner_connection
from chatlake.embedded import Services
from chatlake.jobs import (  # noqa: F401 (launch_erasure, seal_subject, open_subject: API)
    ERASURE_JOB,
    finish_job,
    forget_subject_key,
    job_slot,
    launch_erasure,
    open_subject,
    record_job,
    seal_subject,
)
from chatlake.jobs import digest as keyed_digest
from chatlake.keyspace import redis_sync_client
from chatlake.settings import Settings
from lake.erasure import failpoint
from pipelines.compliance.erasure import erase, erasing_key


def run_erasure(
    settings: Settings, tenant_id: str, user_id: str, actor: str, request_id: str | None = None
) -> dict[str, Any]:
    """Record (or resume) the request, wait for the tenant's turn, erase, certify."""
    endpoints = Services(settings).endpoints()
    request_id = request_id or uuid.uuid4().hex
    subject = keyed_digest(settings, tenant_id, user_id)
    with owner_connection(endpoints.database_url) as conn:
        record_job(conn, request_id, tenant_id, "erasure", subject, actor, "cli")
        inserted = conn.execute(
            """insert into erasure_requests (request_id, tenant_id, subject_digest,
                                             subject_digest_scheme, status, requested_by,
                                             executor)
               values (%s, %s, %s, %s, 'queued', %s, 'cli')
               on conflict (request_id) do nothing""",
            (request_id, tenant_id, *subject, actor),
        ).rowcount
        if inserted:  # the API's request was audited when it was made
            conn.execute(
                """insert into audit_log (tenant_id, actor, action, target, detail)
                   values (%s, %s, 'compliance.erasure.requested', %s, %s)""",
                (tenant_id, actor, request_id,
                 Jsonb({"subject_digest": subject[0], "subject_digest_scheme": subject[1]})),
            )  # fmt: skip
        conn.commit()
    with job_slot(endpoints.database_url, tenant_id, request_id, settings.compliance_max_running):
        with owner_connection(endpoints.database_url) as conn:
            conn.execute(
                """update erasure_requests set status = 'running', started_at = now()
                   where request_id = %s""",
                (request_id,),
            )
        redis = redis_sync_client(endpoints.redis_url)
        try:
            try:
                certificate = erase(settings, redis, tenant_id, user_id, request_id)
                failpoint("verified")  # a crash before the certificate is stored: run again
            except Exception as exc:
                _finish(endpoints.database_url, request_id, tenant_id, actor, "failed",
                        {"error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
                raise
            status = "completed" if certificate["verification"]["passed"] else "failed"
            _finish(endpoints.database_url, request_id, tenant_id, actor, status, certificate)
            mark: Any = redis.get(erasing_key(tenant_id, user_id))
            if mark is None or orjson.loads(mark).get("request_id") == request_id:
                redis.delete(erasing_key(tenant_id, user_id))  # stored: the subject may return
        finally:
            redis.close()
    return certificate


def _finish(
    database_url: str,
    request_id: str,
    tenant_id: str,
    actor: str,
    status: str,
    certificate: dict[str, Any],
) -> None:
    digest = hashlib.sha256(orjson.dumps(certificate, option=orjson.OPT_SORT_KEYS)).hexdigest()
    with owner_connection(database_url) as conn:
        conn.execute(
            """update erasure_requests set status = %s, finished_at = now(), certificate = %s
               where request_id = %s""",
            (status, Jsonb(certificate), request_id),
        )
        finish_job(conn, request_id, status, {"certificate_sha256": digest},
                   certificate.get("error"))  # fmt: skip
        conn.execute(
            """insert into audit_log (tenant_id, actor, action, target, detail)
               values (%s, %s, %s, %s, %s)""",
            (tenant_id, actor, f"compliance.erasure.{status}", request_id,
             Jsonb({"certificate_sha256": digest})),
        )  # fmt: skip
