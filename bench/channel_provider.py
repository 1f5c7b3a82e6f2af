"""A loopback WhatsApp Cloud API for `chatlake bench channels`:
`python -m bench.channel_provider --port P`.

POST /{version}/{phone_number_id}/messages answers as the Cloud API does on success and
records when the message for each recipient (`to`) arrived (wall clock, the same machine
as the bench); GET /arrivals returns them, GET /stats how many arrived.
"""

from __future__ import annotations

import argparse
import itertools
import time

from aiohttp import web

ARRIVALS = web.AppKey("arrivals", dict)
IDS = web.AppKey("ids", itertools.count)


async def messages(request: web.Request) -> web.Response:
    body = await request.json()
    request.app[ARRIVALS].setdefault(str(body.get("to")), time.time())
    return web.json_response({
        "messaging_product": "whatsapp",
        "contacts": [{"input": body.get("to"), "wa_id": body.get("to")}],
        "messages": [{"id": f"wamid.bench{next(request.app[IDS])}"}],
    })  # fmt: skip


async def arrivals(request: web.Request) -> web.Response:
    return web.json_response(request.app[ARRIVALS])


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"received": len(request.app[ARRIVALS])})


def make_app() -> web.Application:
    app = web.Application()
    app[ARRIVALS] = {}
    app[IDS] = itertools.count()
    app.router.add_post("/{version}/{phone_number_id}/messages", messages)
    app.router.add_get("/arrivals", arrivals)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
