"""Erasure requests (GDPR art. 17): accepted at once, carried out out of band.

`POST` records the request (the subject only as a digest) and launches the `erase_subject`
Dagster job, or a `chatlake erase` process when no Dagster webserver is configured
(compliance/requests.py), which erases, verifies and stores the certificate; `GET`
reports the status, what carries it out, and, once done, the certificate. The user id
never reaches a file or a table in the clear.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Response, status

from chatlake.db import tenant_transaction
from chatlake.tenants import record_audit
from compliance.pii import subject_digest
from compliance.requests import launch_erasure
from realtime.api.deps import PlatformDep, TenantDep
from realtime.api.errors import ApiError
from realtime.api.schemas import ErasureIn, ErasureRequestOut, error_responses

router = APIRouter(prefix="/v1/compliance", tags=["compliance"])


@router.post(
    "/erasure-requests",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ErasureRequestOut,
    responses=error_responses(401, 422),
)
async def request_erasure(
    body: ErasureIn, tenant: TenantDep, platform: PlatformDep
) -> ErasureRequestOut:
    request_id = uuid.uuid4().hex
    digest = subject_digest(tenant.tenant_id, body.user_id)
    async with tenant_transaction(platform.pool, tenant.tenant_id) as conn:
        await conn.execute(
            """insert into erasure_requests (request_id, tenant_id, subject_digest, status,
                                             requested_by)
               values (%s, %s, %s, 'running', %s)""",
            (request_id, tenant.tenant_id, digest, tenant.actor),
        )
    launched = await asyncio.to_thread(
        launch_erasure, platform.settings, platform.redis_sync, tenant.tenant_id,
        body.user_id, tenant.actor, request_id,
    )  # fmt: skip
    async with tenant_transaction(platform.pool, tenant.tenant_id) as conn:
        await conn.execute(
            "update erasure_requests set executor = %s, run_id = %s where request_id = %s",
            (launched["executor"], launched["run_id"], request_id),
        )
    return ErasureRequestOut(
        request_id=request_id, status="running", subject_digest=digest, **launched
    )


@router.post(
    "/exports",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}, **error_responses(401, 422)},
)
async def export_subject_bundle(body: ErasureIn, tenant: TenantDep, platform: PlatformDep) -> Any:
    """Everything held about one user (GDPR art. 15 and 20): a zip of subject.json and
    Parquet files of their lake rows."""
    from compliance.export import export_subject

    digest = subject_digest(tenant.tenant_id, body.user_id)
    data = await asyncio.to_thread(
        export_subject, platform.settings, platform.redis_sync, tenant.tenant_id, body.user_id
    )
    async with tenant_transaction(platform.pool, tenant.tenant_id) as conn:
        detail = {"subject_digest": digest}
        await record_audit(conn, tenant.tenant_id, tenant.actor, "compliance.export", None, detail)
    name = f"subject-{digest[:12]}.zip"
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


@router.get(
    "/erasure-requests/{request_id}",
    response_model=ErasureRequestOut,
    responses=error_responses(401, 404),
)
async def get_erasure(request_id: str, tenant: TenantDep, platform: PlatformDep) -> Any:
    async with tenant_transaction(platform.pool, tenant.tenant_id) as conn:
        cur = await conn.execute(
            """select request_id, status, subject_digest, executor, run_id, created_at,
                      finished_at, certificate
                 from erasure_requests where request_id = %s""",
            (request_id,),
        )
        row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "no such erasure request")
    return ErasureRequestOut(**row)
