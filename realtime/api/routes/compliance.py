"""Erasure requests (GDPR art. 17) and subject exports (arts. 15 and 20): accepted at once,
queued, carried out out of band.

A request is recorded in PostgreSQL (the subject only as a keyed digest) with its job in
`compliance_jobs`, and launched: an erasure as the `erase_subject` Dagster job, or a
`chatlake erase` process when no Dagster webserver is configured; an export as a
`chatlake export` process. Either waits queued while another erasure or export of the
tenant runs or the platform's slots are taken (chatlake/jobs.py). The subject reaches
them sealed, never on a command line or in a run configuration in the clear. A request
beyond the tenant's or the platform's bound of queued and running jobs is a 429
`too_many_compliance_jobs` (with Retry-After) that records and starts nothing.

This module imports no lake library: the API process never reads the lake for them.
An export's bundle is written by its job as it reads, and served from the file, streamed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Response, status
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from chatlake.db import tenant_transaction
from chatlake.jobs import (
    INSERT_JOB,
    TooManyJobs,
    admit,
    bundle_path,
    digest,
    launch_erasure,
    launch_process,
    settle_abandoned,
)
from chatlake.tenants import record_audit
from realtime.api.deps import PlatformDep, TenantContext, TenantDep
from realtime.api.errors import ApiError
from realtime.api.schemas import ErasureIn, ErasureRequestOut, error_responses
from realtime.platform import Platform

router = APIRouter(prefix="/v1/compliance", tags=["compliance"])

# How long `POST /v1/compliance/exports` waits for a small export to finish so it can
# answer with the bundle itself (the form it had before exports became jobs); a longer
# one, or a request with `Prefer: respond-async`, is answered 202 with its request id.
EXPORT_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.25


class ExportOut(BaseModel):
    request_id: str
    status: str = Field(description="queued | running | completed | failed")
    subject_digest: str = Field(description="keyed digest of tenant and user id: never the id")
    subject_digest_scheme: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    bytes: int | None = None
    sha256: str | None = None
    error: str | None = None
    bundle_url: str | None = Field(default=None, description="GET it once status is completed")


@router.post(
    "/erasure-requests",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ErasureRequestOut,
    responses=error_responses(401, 422, 429),
)
async def request_erasure(
    body: ErasureIn, tenant: TenantDep, platform: PlatformDep
) -> ErasureRequestOut:
    request_id, subject, launched = await _start(platform, tenant, "erasure", body.user_id)
    return ErasureRequestOut(
        request_id=request_id, status="queued", subject_digest=subject[0],
        subject_digest_scheme=subject[1], **launched,
    )  # fmt: skip


@router.get(
    "/erasure-requests/{request_id}",
    response_model=ErasureRequestOut,
    responses=error_responses(401, 404),
)
async def get_erasure(request_id: str, tenant: TenantDep, platform: PlatformDep) -> Any:
    async with tenant_transaction(platform.pool, tenant.tenant_id) as conn:
        await settle_abandoned(conn, tenant.tenant_id)  # a killed job shows as failed
        cur = await conn.execute(
            """select request_id, status, subject_digest, subject_digest_scheme, executor,
                      run_id, created_at, finished_at, certificate
                 from erasure_requests where request_id = %s""",
            (request_id,),
        )
        row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "no such erasure request")
    return ErasureRequestOut(**row)


@router.post(
    "/exports",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}, "description": "the bundle (small exports)"},
        202: {"model": ExportOut, "description": "queued or running: GET it by request_id"},
        **error_responses(401, 422, 429),
    },
)
async def request_export(
    body: ErasureIn,
    tenant: TenantDep,
    platform: PlatformDep,
    prefer: Annotated[str | None, Header(description="`respond-async`: answer 202 at once")] = None,
) -> Response:
    """Everything held about one user: a zip of subject.json and Parquet files of their
    lake rows, made by a queued job. Answered with the bundle if the job finishes within
    a minute (and `Prefer: respond-async` is not sent), else 202 with the request id."""
    request_id, _, _ = await _start(platform, tenant, "export", body.user_id)
    job = await _export(platform, tenant.tenant_id, request_id)
    if "respond-async" not in (prefer or "").lower():
        deadline = time.monotonic() + EXPORT_WAIT_SECONDS
        while job.status in ("queued", "running") and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            job = await _export(platform, tenant.tenant_id, request_id)
        if job.status == "completed":
            return _bundle(platform, tenant.tenant_id, job)
    return JSONResponse(job.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


@router.get("/exports/{request_id}", response_model=ExportOut, responses=error_responses(401, 404))
async def get_export(request_id: str, tenant: TenantDep, platform: PlatformDep) -> ExportOut:
    return await _export(platform, tenant.tenant_id, request_id)


@router.get(
    "/exports/{request_id}/bundle",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}, **error_responses(401, 404, 409)},
)
async def get_export_bundle(request_id: str, tenant: TenantDep, platform: PlatformDep) -> Response:
    """The bundle, streamed from the file its job wrote."""
    job = await _export(platform, tenant.tenant_id, request_id)
    if job.status != "completed":
        raise ApiError(409, f"the export is {job.status}", code="export_not_ready")
    return _bundle(platform, tenant.tenant_id, job)


async def _start(
    platform: Platform, tenant: TenantContext, kind: Literal["erasure", "export"], user_id: str
) -> tuple[str, tuple[str, str], dict[str, Any]]:
    """Record the request (admitted, with its job and an audit entry, in one transaction),
    launch its job, and record what carries it out: its id, subject digest and launch."""
    request_id = uuid.uuid4().hex
    subject = digest(platform.settings, tenant.tenant_id, user_id)
    # an erasure also has its own row (the certificate's), kept beside the job's
    tables = [("compliance_jobs", "job_id")]
    async with tenant_transaction(platform.pool, tenant.tenant_id) as conn:
        await _admit(conn, platform, tenant.tenant_id)
        if kind == "erasure":
            await conn.execute(
                """insert into erasure_requests (request_id, tenant_id, subject_digest,
                                                 subject_digest_scheme, status, requested_by)
                   values (%s, %s, %s, %s, 'queued', %s)""",
                (request_id, tenant.tenant_id, *subject, tenant.actor),
            )
            tables.insert(0, ("erasure_requests", "request_id"))  # the order it had
        await conn.execute(
            INSERT_JOB, (request_id, tenant.tenant_id, kind, *subject, tenant.actor, None)
        )
        await record_audit(conn, tenant.tenant_id, tenant.actor, f"compliance.{kind}.requested",
                           request_id, _digest_detail(subject))  # fmt: skip
    if kind == "erasure":
        launch = partial(launch_erasure, platform.settings, platform.redis_sync)
    else:
        launch = partial(launch_process, platform.settings, platform.redis_sync, "export")
    launched = await asyncio.to_thread(launch, tenant.tenant_id, user_id, tenant.actor, request_id)
    async with tenant_transaction(platform.pool, tenant.tenant_id) as conn:
        for table, key in tables:
            await conn.execute(
                f"update {table} set executor = %s, run_id = %s where {key} = %s",
                (launched["executor"], launched["run_id"], request_id),
            )
    return request_id, subject, launched


async def _admit(conn: Any, platform: Any, tenant_id: str) -> None:
    try:
        await admit(conn, platform.settings, tenant_id)
    except TooManyJobs as exc:  # the transaction rolls back: nothing recorded
        raise ApiError(429, str(exc), code="too_many_compliance_jobs",
                       headers={"Retry-After": str(exc.retry_after)}) from None  # fmt: skip


def _digest_detail(subject: tuple[str, str]) -> dict[str, str]:
    return {"subject_digest": subject[0], "subject_digest_scheme": subject[1]}


async def _export(platform: Any, tenant_id: str, request_id: str) -> ExportOut:
    async with tenant_transaction(platform.pool, tenant_id) as conn:
        await settle_abandoned(conn, tenant_id)  # a killed job shows as failed
        cur = await conn.execute(
            """select job_id as request_id, status, subject_digest, subject_digest_scheme,
                      created_at, started_at, finished_at, error,
                      (result->>'bytes')::bigint as bytes, result->>'sha256' as sha256
                 from compliance_jobs where job_id = %s and kind = 'export'""",
            (request_id,),
        )
        row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "no such export")
    url = f"/v1/compliance/exports/{request_id}/bundle" if row["status"] == "completed" else None
    return ExportOut(**row, bundle_url=url)


def _bundle(platform: Any, tenant_id: str, job: ExportOut) -> Response:
    path = bundle_path(platform.settings, tenant_id, job.request_id)
    if not path.exists():  # erased with its subject since
        raise ApiError(404, "the export's bundle is gone (its subject was erased)")
    name = f"subject-{job.subject_digest[:12]}.zip"
    return FileResponse(path, media_type="application/zip", filename=name)
