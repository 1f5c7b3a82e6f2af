"""Liveness, readiness (the stores answer; how each component of `chatlake up` is) and
Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from chatlake.runstatus import read_status
from chatlake.streams import stream_status
from realtime.api.deps import PlatformDep
from realtime.observability import ingest_registry, metrics_payload

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(platform: PlatformDep) -> Response:
    """Ready when the stores answer (else 503); `components` says how each part is: the
    stores as this process reaches them, and, under `chatlake up`, each process it
    supervises (`down` while one waits to be restarted) as `up` last wrote it."""

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
    components: dict[str, Any] = read_status(platform.settings) or {}
    for name in checks:
        components[name] = {
            **components.get(name, {}),
            "status": "down" if name in failing else "up",
        }
    if failing:
        body: dict[str, Any] = {
            "error": {
                "code": "unavailable",
                "message": f"not ready: {', '.join(failing)} unreachable",
            },
            "components": components,
        }
        return Response(orjson.dumps(body), status_code=503, media_type="application/json")
    ready: dict[str, Any] = {"status": "ready", "components": components}
    return Response(orjson.dumps(ready), media_type="application/json")


@router.get("/metrics")
async def metrics(platform: PlatformDep) -> Response:
    """Prometheus metrics: the API's own, and the ingest lag read from Redis."""
    status = await asyncio.to_thread(stream_status, platform.redis_sync)
    payload, content_type = metrics_payload(ingest_registry(status))
    return Response(payload, media_type=content_type)
