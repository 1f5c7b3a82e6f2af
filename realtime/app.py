"""The FastAPI application factory; the lifespan opens and closes the store clients."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import psycopg
import psycopg_pool
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.responses import Response

from chatlake import __version__
from chatlake.logconfig import configure_logging
from chatlake.settings import Settings, get_settings
from realtime.api.errors import error_response, install_error_handlers
from realtime.api.routes import (
    api_keys,
    billing,
    channels,
    compliance,
    conversations,
    flows,
    health,
    knowledge,
    messages,
    model_chain,
    nlu,
    tenants,
)
from realtime.channels import dispatch
from realtime.observability import BodyLimitMiddleware, RequestContextMiddleware
from realtime.platform import Platform


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform = await Platform.open(settings)
        app.state.platform = platform
        # messages kept over their channel's budget are answered by the recovery loop too
        platform.sender.answer_deferred = partial(dispatch.answer_deferred, platform)
        platform.sender.start_recovery()  # replies a stopped process left in the outbox
        # Everything loaded so far (libraries, models) lives as long as the process: keep it
        # out of the collector's full passes, which otherwise walk it every few seconds.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await platform.close()

    app = FastAPI(
        title="chatlake",
        version=__version__,
        summary="Multi-tenant chatbot platform: the realtime API",
        lifespan=lifespan,
        # Metrics are Prometheus (realtime/observability.py); without this FastAPI asks
        # OpenTelemetry for its providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)

    async def store_unavailable(_: Request, exc: Exception) -> Response:
        return error_response(
            503,
            "unavailable",
            f"a store is unavailable ({type(exc).__name__}); retry shortly",
            headers={"Retry-After": "1"},
        )

    async def invalid_value(_: Request, exc: Exception) -> Response:
        # Input that passed validation but that PostgreSQL still refuses is the caller's.
        return error_response(422, "validation_error", f"invalid value: {exc}")

    app.add_exception_handler(psycopg.DataError, invalid_value)
    for exc_type in (
        psycopg.OperationalError,
        psycopg_pool.PoolTimeout,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    ):
        app.add_exception_handler(exc_type, store_unavailable)

    # Routes match in order: the hot path first.
    routers = (messages, conversations, flows, nlu, knowledge, model_chain, tenants, api_keys,
               compliance, billing, channels)  # fmt: skip
    for module in (*routers, health):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, access_log=settings.access_log)
    return app
