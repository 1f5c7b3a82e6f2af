"""Compliance jobs (erasures and subject exports): recorded, queued, launched, sealed.

Both are heavy (they read a tenant's lake and rewrite stores), so they never run in the
API process and never all at once:
- every request is a row of `compliance_jobs` (migration 0014), `queued` until the job
  holds a slot, then `running`, `completed` or `failed`;
- a slot is two PostgreSQL advisory locks held by the job's own session: its tenant's (one
  job running per tenant) and one of `CHATLAKE_COMPLIANCE_MAX_RUNNING` platform slots. A
  killed job's session ends and its slots are free at once; nothing needs a lease;
- the API admits a request only while the tenant has fewer than
  `CHATLAKE_COMPLIANCE_MAX_QUEUED_PER_TENANT` jobs queued or running and the platform
  fewer than `CHATLAKE_COMPLIANCE_MAX_QUEUED` (each is a process waiting for its slot);
  beyond, nothing is recorded or started. A job's process holds a lock of its own from
  before it waits until it ends, so a job whose process died stops counting;
- the API records the request and launches `chatlake erase|export --request-id R
  --sealed-subject S`: the user id travels sealed (Fernet) under a key of the request's own
  kept in Redis only, so no process's command line (/proc/<pid>/cmdline, `ps`) holds it.
  The key is destroyed, and Redis's append-only file rewritten, once the job is done.

This module imports no lake library (deltalake, duckdb, polars): the API uses it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.fernet import Fernet, InvalidToken
from redis import Redis

from chatlake.db import AppConnection
from chatlake.errors import ChatlakeError
from chatlake.keyspace import TenantKeyspace
from chatlake.pii import KEYED_SCHEME, keyed_subject_digest
from chatlake.secrets import derived_key
from chatlake.settings import Settings
from chatlake.subject_keys import rewrite_aof

log = logging.getLogger(__name__)

ERASURE_JOB = "erase_subject"
CODE_LOCATION = {"repository_location_name": "pipelines", "repository_name": "__repository__"}
SEALED_KEY_SECONDS = 7 * 86400  # a failed run can be re-executed within a week
# advisory-lock namespaces (the first key of pg_advisory_lock(int, int))
TENANT_LOCKS = 0x636C_0001
PLATFORM_LOCKS = 0x636C_0002
# transaction-scoped, around counting and recording a request: the tenant's, then the
# platform's (a flood from one tenant queues on its own lock, not on everyone's)
ADMISSION_LOCKS = 0x636C_0003
PLATFORM_ADMISSION_LOCKS = 0x636C_0004
# held by a job's process while it waits and runs: the job is alive (migration 0016)
JOB_LOCKS = 0x636C_0005
# a job whose process does not hold its lock this long after the request is abandoned
# (launching a process and reaching `job_slot` takes seconds)
ABANDONED_AFTER = timedelta(minutes=10)
RETRY_AFTER_SECONDS = 60
POLL_SECONDS = 0.25

INSERT_JOB = """insert into compliance_jobs (job_id, tenant_id, kind, status, subject_digest,
                                             subject_digest_scheme, requested_by, executor)
                values (%s, %s, %s, 'queued', %s, %s, %s, %s)
                on conflict (job_id) do nothing"""


def subject_digest_key(settings: Settings) -> bytes:
    """The platform key of keyed subject digests (derived from the pseudonym key, which is
    as long-lived as the pseudonyms themselves)."""
    return derived_key(settings.secret("pseudonym_key"), "chatlake subject digest v1")


def digest(settings: Settings, tenant_id: str, user_id: str) -> tuple[str, str]:
    """(digest, scheme) naming the subject in new requests, audit entries, certificates."""
    return keyed_subject_digest(subject_digest_key(settings), tenant_id, user_id), KEYED_SCHEME


def bundle_path(settings: Settings, tenant_id: str, job_id: str) -> Path:
    """Where an export job writes its bundle (erasing the subject deletes it)."""
    return settings.home / "exports" / tenant_id / f"{job_id}.zip"


# --- the sealed subject ----------------------------------------------------------------


def seal_subject(redis: Redis, tenant_id: str, request_id: str, user_id: str) -> str:
    """The user id sealed under a new key kept in Redis only (see the module's note)."""
    key = Fernet.generate_key()
    redis.set(TenantKeyspace(tenant_id).erasure_key(request_id), key, ex=SEALED_KEY_SECONDS)
    return Fernet(key).encrypt(user_id.encode()).decode()


def open_subject(redis: Redis, tenant_id: str, request_id: str, sealed: str) -> str:
    key: Any = redis.get(TenantKeyspace(tenant_id).erasure_key(request_id))
    if key is None:
        raise ChatlakeError(
            f"the key of request {request_id} is gone (the job completed, or the request "
            "is older than a week): make the request again"
        )
    try:
        return Fernet(key).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise ChatlakeError(f"the sealed subject of request {request_id} is not its own") from None


def forget_subject_key(redis: Redis, tenant_id: str, request_id: str) -> None:
    """Destroy the request's key, in memory and in the append-only file."""
    if redis.delete(TenantKeyspace(tenant_id).erasure_key(request_id)):
        rewrite_aof(redis)


def launch_process(
    settings: Settings, redis: Redis, kind: str, tenant_id: str, user_id: str, actor: str,
    request_id: str,
) -> dict[str, Any]:  # fmt: skip
    """Start `chatlake erase|export` for a recorded request, the subject sealed."""
    sealed = seal_subject(redis, tenant_id, request_id, user_id)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / f"{kind}-{request_id}.log", "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatlake", "erase" if kind == "erasure" else "export",
             "--tenant", tenant_id, "--request-id", request_id, "--sealed-subject", sealed,
             "--actor", actor],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return {"executor": "process", "run_id": str(process.pid)}


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
    return launch_process(settings, redis, "erasure", tenant_id, user_id, actor, request_id)


LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""


def _submit_to_dagster(url: str, config: dict[str, str]) -> str:
    """Launch the erasure job through the Dagster webserver's GraphQL API (`launchRun`),
    over plain HTTP: the API process never loads Dagster itself."""
    params = {
        "selector": {
            "repositoryLocationName": CODE_LOCATION["repository_location_name"],
            "repositoryName": CODE_LOCATION["repository_name"],
            "jobName": ERASURE_JOB,
        },
        "runConfigData": {"ops": {"erase_subject_everywhere": {"config": config}}},
        "executionMetadata": {
            "tags": [
                {"key": "chatlake/erasure_request", "value": config["request_id"]},
                {"key": "chatlake/tenant", "value": config["tenant_id"]},
            ]
        },
    }
    response = httpx.post(
        f"{url.rstrip('/')}/graphql",
        json={"query": LAUNCH_RUN, "variables": {"executionParams": params}},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise ChatlakeError(f"Dagster refused the run: {body['errors'][0].get('message')}")
    result = body["data"]["launchRun"]
    if result["__typename"] == "LaunchRunSuccess":
        return str(result["run"]["runId"])
    reasons = [e["message"] for e in result.get("errors", [])] or [result.get("message", "")]
    raise ChatlakeError(f"Dagster refused the run ({result['__typename']}): {'; '.join(reasons)}")


# --- the queue -------------------------------------------------------------------------


class TooManyJobs(ChatlakeError):
    """The tenant or the platform has its most compliance jobs queued or running."""

    retry_after = RETRY_AFTER_SECONDS


async def admit(conn: AppConnection, settings: Settings, tenant_id: str) -> None:
    """In the tenant's transaction that then records the request: raise TooManyJobs when
    the tenant or the platform already has its bound of jobs queued or running. The locks
    (released at commit) make the count and the insert one step for concurrent requests."""
    await conn.execute("select pg_advisory_xact_lock(%s, hashtext(%s))",
                       (ADMISSION_LOCKS, tenant_id))  # fmt: skip
    await conn.execute("select pg_advisory_xact_lock(%s, 0)", (PLATFORM_ADMISSION_LOCKS,))
    await settle_abandoned(conn, tenant_id)
    cur = await conn.execute(
        """select (select count(*) from compliance_jobs  -- the tenant's only (RLS)
                   where status in ('queued', 'running')
                     and (created_at > now() - %(grace)s or compliance_job_alive(job_id)))
                  as tenant,
                  compliance_jobs_outstanding(%(grace)s) as platform""",
        {"grace": ABANDONED_AFTER},
    )
    counts: Any = await cur.fetchone()
    tenant, platform = counts["tenant"], counts["platform"]
    if tenant >= settings.compliance_max_queued_per_tenant:
        raise TooManyJobs(
            f"{tenant} erasure or export jobs of this tenant are queued or running (at most "
            f"{settings.compliance_max_queued_per_tenant}); retry once one has finished"
        )
    if platform >= settings.compliance_max_queued:
        raise TooManyJobs(
            f"the platform has its most erasure and export jobs queued or running "
            f"({settings.compliance_max_queued}); retry later"
        )


def record_job(
    conn: psycopg.Connection[Any], job_id: str, tenant_id: str, kind: str, subject: tuple[str, str],
    actor: str, executor: str,
) -> None:  # fmt: skip
    """The job's row (queued), unless the request already has one (a rerun); a
    ChatlakeError when there is no such tenant (a mistake at the command line)."""
    if conn.execute("select 1 from tenants where tenant_id = %s", (tenant_id,)).fetchone() is None:
        raise ChatlakeError(f"no tenant {tenant_id}")
    conn.execute(INSERT_JOB, (job_id, tenant_id, kind, *subject, actor, executor))


# A job queued or running whose process no longer holds its lock (JOB_LOCKS) and that is
# older than the time a launched process takes to take it was abandoned: its process was
# killed (or never started). Marked failed, it shows the truth and can be requested again.
ABANDONED = "abandoned: its process ended before it finished; make the request again"
SETTLE_ABANDONED = """
with abandoned as (
  update compliance_jobs set status = 'failed', finished_at = now(), error = %(error)s
   where tenant_id = %(tenant)s and status in ('queued', 'running')
     and created_at <= now() - %(grace)s and not compliance_job_alive(job_id)
     -- a run waiting in Dagster's queue holds no lock yet: only Dagster knows it is alive
     and (status = 'running' or executor is distinct from 'dagster')
  returning job_id, kind)
update erasure_requests set status = 'failed', finished_at = now(),
                            certificate = jsonb_build_object('error', %(error)s::text)
 where request_id in (select job_id from abandoned where kind = 'erasure')
   and status in ('queued', 'running')"""


async def settle_abandoned(conn: AppConnection, tenant_id: str) -> None:
    """Mark the tenant's abandoned jobs (and their erasure requests) failed, in its
    transaction, before reading or counting them."""
    await conn.execute(
        SETTLE_ABANDONED, {"error": ABANDONED, "tenant": tenant_id, "grace": ABANDONED_AFTER}
    )


@contextmanager
def job_slot(database_url: str, tenant_id: str, job_id: str, max_running: int) -> Iterator[None]:
    """Wait (queued) until no other job of the tenant runs and a platform slot is free,
    then mark the job running and hold both until the block ends."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        tenant_key = conn.execute("select hashtext(%s)", (tenant_id,)).fetchone()[0]  # type: ignore[index]
        # the job is alive while this session lasts (admission counts it; a killed one not)
        conn.execute("select pg_try_advisory_lock(%s, hashtext(%s))", (JOB_LOCKS, job_id))
        while True:
            if _try_lock(conn, TENANT_LOCKS, tenant_key):
                slot = next((i for i in range(max_running)
                             if _try_lock(conn, PLATFORM_LOCKS, i)), None)  # fmt: skip
                if slot is not None:
                    break
                conn.execute("select pg_advisory_unlock(%s, %s)", (TENANT_LOCKS, tenant_key))
            time.sleep(POLL_SECONDS)
        conn.execute(
            """update compliance_jobs set status = 'running', started_at = now(),
                      run_id = coalesce(run_id, %s) where job_id = %s""",
            (str(os.getpid()), job_id),
        )
        try:
            yield
        finally:  # the session's end would free them too; a reused process should not wait
            conn.execute("select pg_advisory_unlock(%s, %s)", (TENANT_LOCKS, tenant_key))
            conn.execute("select pg_advisory_unlock(%s, %s)", (PLATFORM_LOCKS, slot))


def _try_lock(conn: psycopg.Connection[Any], namespace: int, key: int) -> bool:
    row = conn.execute("select pg_try_advisory_lock(%s, %s)", (namespace, key)).fetchone()
    return bool(row and row[0])


def finish_job(
    conn: psycopg.Connection[Any], job_id: str, status: str, result: dict[str, Any] | None,
    error: str | None = None,
) -> None:  # fmt: skip
    from psycopg.types.json import Jsonb

    conn.execute(
        """update compliance_jobs set status = %s, finished_at = now(), result = %s, error = %s
           where job_id = %s""",
        (status, Jsonb(result) if result is not None else None, error, job_id),
    )
