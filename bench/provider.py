"""A loopback OpenAI-compatible provider that answers after a fixed delay, for
`chatlake bench realtime --chain`: `python -m bench.provider --port P --delay-ms D`.

POST /v1/chat/completions answers a Chat Completions body (with usage) once the delay has
passed; GET /stats reports how many completions it served, so the bench can prove that
every measured message reached the provider (no cache hits).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

from aiohttp import web

DELAY = web.AppKey("delay_s", float)
CALLS = web.AppKey("calls", itertools.count)
SERVED = web.AppKey("served", list)


async def completions(request: web.Request) -> web.Response:
    body = await request.json()
    await asyncio.sleep(request.app[DELAY])
    request.app[SERVED][0] = next(request.app[CALLS]) + 1
    words = len(" ".join(m.get("content", "") for m in body.get("messages", [])).split())
    return web.json_response({
        "id": "chatcmpl-bench", "object": "chat.completion", "model": body.get("model"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "A measured answer."}}],
        "usage": {"prompt_tokens": words, "completion_tokens": 3, "total_tokens": words + 3},
    })  # fmt: skip


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"calls": request.app[SERVED][0]})


def make_app(delay_ms: float) -> web.Application:
    app = web.Application()
    app[DELAY] = delay_ms / 1000
    app[CALLS] = itertools.count()
    app[SERVED] = [0]
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50)
    args = parser.parse_args()
    web.run_app(make_app(args.delay_ms), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
