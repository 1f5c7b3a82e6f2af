"""Liveness, readiness (the stores answer) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from lake.streams import stream_status
from realtime.api.deps import PlatformDep
from realtime.api.errors import error_response
from realtime.observability import ingest_registry, metrics_payload

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(platform: PlatformDep) -> Response:
    async def postgres() -> None:
        async with platform.pool.connection(timeout=2) as conn:
            await conn.execute("select 1")

    checks = {"postgres": postgres(), "redis": platform.redis.ping()}
    results = await asyncio.gather(
        *(asyncio.wait_for(check, 3) for check in checks.values()), return_exceptions=True
    )
    failing = [
        name for name, r in zip(checks, results, strict=True) if isinstance(r, BaseException)
    ]
    if failing:
        return error_response(503, "unavailable", f"not ready: {', '.join(failing)} unreachable")
    return Response(b'{"status":"ready"}', media_type="application/json")


@router.get("/metrics")
async def metrics(platform: PlatformDep) -> Response:
    """Prometheus metrics: the API's own, and the ingest lag read from Redis."""
    status = await asyncio.to_thread(stream_status, platform.redis_sync)
    payload, content_type = metrics_payload(ingest_registry(status))
    return Response(payload, media_type=content_type)
