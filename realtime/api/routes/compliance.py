"""Erasure requests (GDPR art. 17): accepted at once, carried out out of band.

`POST` records the request (the subject only as a digest) and starts `chatlake erase` as
a separate process, which erases, verifies and stores the certificate; `GET` reports the
status and, once done, the certificate. The user id travels to that process in memory
(its arguments), never through a file or a table.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import Any

from fastapi import APIRouter, Response, status

from chatlake.db import tenant_transaction
from chatlake.tenants import record_audit
from compliance.pii import subject_digest
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
    log = open(platform.settings.run_dir / f"erasure-{request_id}.log", "ab")
    subprocess.Popen(
        [sys.executable, "-m", "chatlake", "erase", "--tenant", tenant.tenant_id,
         "--user", body.user_id, "--request-id", request_id, "--actor", tenant.actor],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    return ErasureRequestOut(request_id=request_id, status="running", subject_digest=digest)


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
    async with tenant_transaction(platform.pool, tenant.tenant_id) as conn:
        cur = await conn.execute(
            """select request_id, status, created_at::text, finished_at::text
                 from erasure_requests where subject_digest = %s""",
            (digest,),
        )
        requests = await cur.fetchall()
    data = await asyncio.to_thread(
        export_subject, platform.settings.lake_root, platform.redis_sync, list(requests),
        tenant.tenant_id, body.user_id,
    )  # fmt: skip
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
            """select request_id, status, subject_digest, created_at, finished_at, certificate
                 from erasure_requests where request_id = %s""",
            (request_id,),
        )
        row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "no such erasure request")
    return ErasureRequestOut(**row)
