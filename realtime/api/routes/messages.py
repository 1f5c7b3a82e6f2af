"""`POST /v1/messages`: the hot path. The request is parsed here; the message goes through
admission, the engine's turn, state and the event append in `realtime.messages.converse`
(the path a channel's messages take too)."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from realtime.api.deps import client_address
from realtime.api.errors import parse_json_body
from realtime.api.schemas import MessageIn, MessageOut, error_responses
from realtime.auth import bearer_token, parse_bearer
from realtime.messages import converse
from realtime.platform import Platform

router = APIRouter(prefix="/v1", tags=["messages"])

ERRORS = error_responses(400, 401, 404, 409, 413, 422, 429)


@router.post(
    "/messages",
    response_model=MessageOut,
    responses=ERRORS,
    openapi_extra={
        "security": [{"HTTPBearer": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": MessageIn.model_json_schema()}},
        },
    },
)
async def post_message(request: Request) -> Response:
    """Send an end user's message; the bot's replies come back in the response."""
    # The hot path does by hand what FastAPI's dependency solving and body parsing would
    # (they cost more per request than the rest of this handler): the key from the header,
    # the body validated by pydantic straight from the bytes, in Rust.
    started = time.perf_counter()
    platform: Platform = request.app.state.platform
    key = parse_bearer(bearer_token(request.headers.get("authorization")))
    body = parse_json_body(MessageIn, await request.body())
    result, _ = await converse(platform, key, body, started, client=client_address(request))
    return Response(orjson.dumps(result), media_type="application/json")
