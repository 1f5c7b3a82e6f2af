"""The two ceilings `bench realtime` measures beside the real API, on the same machine.

* `echo_app`: a bare ASGI app that parses the JSON body with orjson and echoes it. Nothing
  can answer faster through this server stack: the server's limit.
* `create_stack_app()`: a minimal FastAPI endpoint that validates the same `MessageIn` body
  and makes one pipelined Redis round trip (read the conversation, append an event): the
  limit of the stack the real hot path is built on.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from redis.asyncio import Redis

from realtime.api.schemas import MessageIn


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = orjson.dumps({"echo": orjson.loads(body) if body else None})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def create_stack_app() -> FastAPI:
    redis = Redis.from_url(os.environ["BENCH_REDIS_URL"], max_connections=64)
    app = FastAPI()

    @app.post("/v1/messages")
    async def message(body: MessageIn) -> Response:
        key = f"bench:{{ceiling}}:conv:{body.user_id}"
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.xadd(
                "bench:{ceiling}:events", {"event": body.text}, maxlen=10000, approximate=True
            )
            await pipe.execute()
        return Response(orjson.dumps({"ok": True, "user_id": body.user_id}))

    return app
