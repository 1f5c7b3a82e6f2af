"""The calling tenant's conversation flow: the live document, versions, rollback, A/B."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response, status

from realtime.api.deps import PlatformDep, TenantDep
from realtime.api.errors import ApiError
from realtime.api.schemas import (
    ExperimentIn,
    FlowPublished,
    FlowVersion,
    FlowVersions,
    RollbackIn,
    error_responses,
)
from realtime.engine.flows.engine import FlowInvalid, flow_schema

router = APIRouter(prefix="/v1/flow", tags=["flows"])
ERRORS = error_responses(400, 401, 404, 422)


@router.get("/schema")
async def get_schema() -> dict[str, Any]:
    """The JSON Schema every flow document is validated against."""
    return flow_schema()


@router.get("", responses=ERRORS)
async def get_flow(tenant: TenantDep, platform: PlatformDep) -> Response:
    """The live flow document (its version in the `X-Flow-Version` header)."""
    version, _ = await platform.flows.live(tenant.tenant_id)
    if version is None:
        raise ApiError(404, "this tenant has no flow yet; PUT /v1/flow publishes one")
    document = await platform.flows.document(tenant.tenant_id, version)
    return Response(
        orjson.dumps(document),
        media_type="application/json",
        headers={"X-Flow-Version": str(version)},
    )


@router.put(
    "",
    response_model=FlowPublished,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "A flow document, valid against GET /v1/flow/schema",
                    }
                }
            },
        }
    },
)
async def publish_flow(request: Request, tenant: TenantDep, platform: PlatformDep) -> FlowPublished:
    """Publish a flow document as a new version and make it live. Open conversations keep
    the version they started with."""
    try:
        document = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise ApiError(
            400, "the request body must be a JSON object", code="malformed_json"
        ) from None
    if not isinstance(document, dict):
        raise ApiError(422, "$: a flow is a JSON object")
    try:
        version = await platform.flows.publish(tenant.tenant_id, document, tenant.actor)
    except FlowInvalid as exc:
        raise ApiError(
            422, f"invalid flow: {exc}", code="invalid_flow",
            details=[{"field": p["path"], "problem": p["problem"]} for p in exc.problems],
        ) from None  # fmt: skip
    return FlowPublished(version=version)


@router.get("/versions", response_model=FlowVersions, responses=ERRORS)
async def list_versions(tenant: TenantDep, platform: PlatformDep) -> FlowVersions:
    live, experiment = await platform.flows.live(tenant.tenant_id)
    versions = await platform.flows.versions(tenant.tenant_id)
    return FlowVersions(
        live=live, experiment=experiment, versions=[FlowVersion(**v) for v in versions]
    )


@router.post("/rollback", response_model=FlowPublished, responses=ERRORS)
async def rollback(body: RollbackIn, tenant: TenantDep, platform: PlatformDep) -> FlowPublished:
    """Make an earlier version live again (new conversations start on it)."""
    version = await platform.flows.rollback(tenant.tenant_id, body.version, tenant.actor)
    return FlowPublished(version=version)


@router.put("/experiment", response_model=FlowVersions, responses=ERRORS)
async def put_experiment(
    body: ExperimentIn, tenant: TenantDep, platform: PlatformDep
) -> FlowVersions:
    """Split new conversations between flow versions, by user, with the given weights."""
    variants = [v.model_dump() for v in body.variants]
    await platform.flows.set_experiment(tenant.tenant_id, variants, tenant.actor)
    return await list_versions(tenant, platform)


@router.delete(
    "/experiment", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    responses=ERRORS,
)  # fmt: skip
async def end_experiment(tenant: TenantDep, platform: PlatformDep) -> Response:
    await platform.flows.set_experiment(tenant.tenant_id, None, tenant.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
