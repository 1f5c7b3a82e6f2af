"""Erasure requests: recorded in PostgreSQL (subject as a digest), carried out by
`compliance.erasure.erase`, certified, and audited.

An API request launches the `erase_subject` Dagster job (pipelines/defs/compliance.py)
when a Dagster webserver is configured (`CHATLAKE_DAGSTER_URL`, which `up` sets), else a
`chatlake erase` process. The job's run configuration is stored by Dagster, so it never
carries the user id in the clear: the id is sealed (Fernet) under a key of the request's
own that lives in Redis only, and that key is destroyed, and Redis's append-only file
rewritten, once the erasure completes. What Dagster keeps is then unreadable.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.fernet import Fernet, InvalidToken
from psycopg.types.json import Jsonb
from redis import Redis

from chatlake.db import owner_connection
from chatlake.embedded import Services
from chatlake.errors import ChatlakeError
from chatlake.keyspace import TenantKeyspace, redis_sync_client
from chatlake.settings import Settings
from compliance.erasure import erase, erasing_key, rewrite_aof, subject_digest
from lake.erasure import failpoint

log = logging.getLogger(__name__)

ERASURE_JOB = "erase_subject"
SEALED_KEY_SECONDS = 7 * 86400  # a failed run can be re-executed within a week
CODE_LOCATION = {"repository_location_name": "pipelines", "repository_name": "__repository__"}


def seal_subject(redis: Redis, tenant_id: str, request_id: str, user_id: str) -> str:
    """The user id sealed under a new key kept in Redis only (see the module's note)."""
    key = Fernet.generate_key()
    redis.set(TenantKeyspace(tenant_id).erasure_key(request_id), key, ex=SEALED_KEY_SECONDS)
    return Fernet(key).encrypt(user_id.encode()).decode()


def open_subject(redis: Redis, tenant_id: str, request_id: str, sealed: str) -> str:
    key: Any = redis.get(TenantKeyspace(tenant_id).erasure_key(request_id))
    if key is None:
        raise ChatlakeError(
            f"the key of erasure request {request_id} is gone (the erasure completed, or the "
            "request is older than a week): request the erasure again"
        )
    try:
        return Fernet(key).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise ChatlakeError(
            f"the sealed subject of erasure request {request_id} is not its own"
        ) from None


def forget_subject_key(redis: Redis, tenant_id: str, request_id: str) -> None:
    """Destroy the request's key, in memory and in the append-only file."""
    if redis.delete(TenantKeyspace(tenant_id).erasure_key(request_id)):
        rewrite_aof(redis)


def launch_erasure(
    settings: Settings, redis: Redis, tenant_id: str, user_id: str, actor: str, request_id: str
) -> dict[str, Any]:
    """Start the erasure out of band: the Dagster job, or a `chatlake erase` process when
    no Dagster webserver is configured or it does not take the run."""
    if settings.dagster_url:
        sealed = seal_subject(redis, tenant_id, request_id, user_id)
        config = {"request_id": request_id, "tenant_id": tenant_id, "actor": actor,
                  "sealed_subject": sealed}  # fmt: skip
        try:
            run_id = _submit_to_dagster(settings.dagster_url, config)
            return {"executor": "dagster", "run_id": run_id}
        except Exception as exc:  # unreachable, or it refused the run: the process does it
            log.warning("erasure %s: Dagster did not take the run (%s); running it as a "
                        "process", request_id, exc)  # fmt: skip
    with open(settings.run_dir / f"erasure-{request_id}.log", "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatlake", "erase", "--tenant", tenant_id,
             "--user", user_id, "--request-id", request_id, "--actor", actor],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return {"executor": "process", "run_id": str(process.pid)}


def _submit_to_dagster(url: str, config: dict[str, str]) -> str:
    from dagster_graphql import DagsterGraphQLClient

    parts = urlsplit(url)
    client = DagsterGraphQLClient(
        parts.hostname or "127.0.0.1",
        port_number=parts.port,
        use_https=parts.scheme == "https",
        timeout=30,
    )
    return client.submit_job_execution(
        ERASURE_JOB,
        **CODE_LOCATION,
        run_config={"ops": {"erase_subject_everywhere": {"config": config}}},
        tags={
            "chatlake/erasure_request": config["request_id"],
            "chatlake/tenant": config["tenant_id"],
        },
    )


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
                                             requested_by, executor)
               values (%s, %s, %s, 'running', %s, 'cli')
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
