"""The calling tenant's API keys: several at once, each revocable; a key is shown once."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from realtime.api.deps import PlatformDep, TenantDep
from realtime.api.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyList, ApiKeyOut, error_responses

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])
ERRORS = error_responses(401, 404, 422)


@router.get("", response_model=ApiKeyList, responses=ERRORS)
async def list_keys(tenant: TenantDep, platform: PlatformDep) -> ApiKeyList:
    keys = await platform.control.list_api_keys(tenant.tenant_id)
    return ApiKeyList(api_keys=[ApiKeyOut(**key) for key in keys])


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated, responses=ERRORS
)
async def create_key(body: ApiKeyIn, tenant: TenantDep, platform: PlatformDep) -> ApiKeyCreated:
    issued = await platform.control.create_api_key(tenant.tenant_id, body.name, tenant.actor)
    return ApiKeyCreated(
        key_id=issued.key_id,
        name=issued.name,
        api_key=issued.api_key,
        display_prefix=issued.display_prefix,
    )


@router.delete(
    "/{key_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=ERRORS
)
async def revoke_key(key_id: str, tenant: TenantDep, platform: PlatformDep) -> Response:
    await platform.control.revoke_api_key(tenant.tenant_id, key_id, tenant.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
