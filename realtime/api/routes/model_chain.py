"""The calling tenant's model chain (LLM provider tiers; keys stored sealed, never shown)."""

from __future__ import annotations

from fastapi import APIRouter

from realtime.api.deps import PlatformDep, TenantDep
from realtime.api.errors import ApiError
from realtime.api.schemas import ChainIn, ChainOut, ChainTierOut, error_responses
from realtime.outbound import url_problem

router = APIRouter(prefix="/v1/model-chain", tags=["model chain"])
ERRORS = error_responses(401, 422)


@router.get("", response_model=ChainOut, responses=ERRORS)
async def get_chain(tenant: TenantDep, platform: PlatformDep) -> ChainOut:
    tiers = await platform.model_chain.get(tenant.tenant_id)
    return ChainOut(tiers=[ChainTierOut(**t) for t in tiers])


@router.put("", response_model=ChainOut, responses=ERRORS)
async def put_chain(body: ChainIn, tenant: TenantDep, platform: PlatformDep) -> ChainOut:
    """Replace the chain; a tier without `api_key` keeps the key it had."""
    for i, tier in enumerate(body.tiers):
        problem = (
            await url_problem(tier.base_url, platform.settings.allow_private_urls)
            if tier.base_url
            else None
        )
        if problem:
            raise ApiError(422, f"tiers[{i}].base_url: {problem}", code="validation_error")
    await platform.model_chain.put(
        tenant.tenant_id, [t.model_dump() for t in body.tiers], tenant.actor
    )
    return await get_chain(tenant, platform)
