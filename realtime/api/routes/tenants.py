"""Tenants (platform admin) and the calling tenant's own record."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, status

from chatlake.billing import BillingError, known_plan
from realtime.api.deps import AdminDep, Credentials, PlatformDep, TenantDep
from realtime.api.errors import ApiError
from realtime.api.schemas import (
    OwnTenantPatch,
    TenantCreated,
    TenantIn,
    TenantOut,
    TenantPatch,
    error_responses,
)
from realtime.auth import check_admin_token

router = APIRouter(prefix="/v1", tags=["tenants"])


async def tenant_creator(platform: PlatformDep, credentials: Credentials) -> str:
    """Who may create a tenant: the platform admin, or anyone when open sign-up is on.

    A dependency, so that it answers before the body is validated.
    """
    if platform.settings.open_signup and credentials is None:
        return "open-signup"
    check_admin_token(platform, credentials.credentials if credentials else None)
    return "platform-admin"


ERRORS = error_responses(401, 404, 422)


def _plan(platform: PlatformDep, name: str | None) -> str | None:
    try:
        return None if name is None else known_plan(platform.settings.billing_plans, name)
    except BillingError as exc:
        raise ApiError(422, str(exc), code="unknown_plan") from None


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantCreated,
    responses=ERRORS,
)
async def create_tenant(
    body: TenantIn, platform: PlatformDep, actor: Annotated[str, Depends(tenant_creator)]
) -> TenantCreated:
    """Create a tenant and its first API key (shown once). Needs the platform admin token
    unless open sign-up is enabled."""
    rate_limit = body.rate_limit_per_minute or platform.settings.default_rate_limit
    plan = _plan(platform, body.plan) or platform.settings.default_plan
    tenant, issued = await platform.control.create_tenant(
        body.name, rate_limit, plan=plan, actor=actor, retention_days=body.retention_days
    )
    return TenantCreated(
        tenant_id=tenant.tenant_id,
        name=tenant.name,
        api_key=issued.api_key,
        key_id=issued.key_id,
        plan=tenant.plan,
        rate_limit_per_minute=tenant.rate_limit_per_minute,
        retention_days=tenant.retention_days,
    )


@router.patch(
    "/tenants/{tenant_id}", response_model=TenantOut, responses=ERRORS, dependencies=[AdminDep]
)
async def update_tenant(tenant_id: str, body: TenantPatch, platform: PlatformDep) -> TenantOut:
    """Change a tenant's rate limit, status, retention or plan (platform admin)."""
    try:
        tenant_id = str(UUID(tenant_id))
    except ValueError:
        raise ApiError(404, f"tenant {tenant_id} not found") from None
    tenant = await platform.control.update_tenant(
        tenant_id,
        rate_limit_per_minute=body.rate_limit_per_minute,
        status=body.status,
        retention_days=body.retention_days,
        plan=_plan(platform, body.plan),
    )
    return TenantOut(**tenant.public())


@router.get("/tenant", response_model=TenantOut, responses=ERRORS)
async def get_own_tenant(tenant: TenantDep, platform: PlatformDep) -> TenantOut:
    """The calling tenant."""
    return TenantOut(**(await platform.control.get_tenant(tenant.tenant_id)).public())


@router.patch("/tenant", response_model=TenantOut, responses=ERRORS)
async def update_own_tenant(
    body: OwnTenantPatch, tenant: TenantDep, platform: PlatformDep
) -> TenantOut:
    """The calling tenant's retention: conversations older than `retention_days` are
    deleted from the lake and the per-message marts by the nightly retention job."""
    updated = await platform.control.update_tenant(
        tenant.tenant_id, retention_days=body.retention_days, actor=tenant.actor
    )
    return TenantOut(**updated.public())


@router.get("/audit-log", responses=ERRORS)
async def audit_log(
    tenant: TenantDep,
    platform: PlatformDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The tenant's audit log, newest first: who changed what (append-only)."""
    return {"entries": await platform.control.audit_entries(tenant.tenant_id, limit)}
