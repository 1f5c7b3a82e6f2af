"""The demo tenant's first figures: a few days of synthetic conversations sent through the
real API code (the FastAPI app in-process, the real stores, the event stream the ingest
worker reads), then the real pipeline (silver, dbt, checks, invoices), so that a newcomer
opens the dashboards on live figures.

Past days are replayed with the platform's clock moved back to each day (the one hook the
API has for it); everything else, rate limits and state included, runs as in production.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import httpx

from chatlake.errors import ChatlakeError
from chatlake.settings import Settings

INTENTS = {
    "greet": ["hi", "hello", "hey there", "good morning", "hello, anyone there?",
              "hi team", "good evening", "hey"],
    "order_status": ["where is my order", "track my parcel", "has my package shipped",
                     "my delivery is late", "order status please", "when will my order arrive",
                     "I haven't received my order", "where's my parcel"],
    "opening_hours": ["when are you open", "what are your opening hours", "are you open on "
                      "saturday", "what time do you close", "opening times", "are you open now",
                      "business hours", "when do you open tomorrow"],
    "returns": ["how do I return an item", "can I get a refund", "return policy",
                "I want to send this back", "refund my purchase", "how long do I have to "
                "return", "exchange a jacket", "returning a gift"],
    "human": ["talk to a person", "I want a human", "connect me to an agent",
              "speak to someone", "real person please", "customer service representative",
              "operator", "let me talk to staff"],
}  # fmt: skip
# (weight, the user's messages in order): greetings, order checks (some failing), hours,
# returns, escalations, things the bot cannot place (fallbacks), personal data to mask
SCRIPTS: list[tuple[int, list[str]]] = [
    (5, ["hello", "what are your opening hours?", "thanks"]),
    (6, ["hi", "where is my order?", "{order}", "no"]),
    (3, ["my parcel is late", "{order}", "yes", "{order}", "nope"]),
    (2, ["has my package shipped?", "not sure", "no idea", "I don't have it"]),
    (3, ["can I get a refund for a jacket?"]),
    (2, ["I want to talk to a human"]),
    (2, ["zxqv blorp", "what?"]),
    (2, ["do you sell gift cards?", "ok bye"]),
    (2, ["my email is {user}@example.com, where is my order?", "{order}", "no"]),
]


async def _send(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    for _ in range(20):
        answer = await client.post("/v1/messages", json=body, headers=headers)
        if answer.status_code == 429:  # the tenant's rate limit: wait as told
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            continue
        if answer.status_code != 200:
            raise ChatlakeError(f"seeding the demo: {answer.status_code} {answer.text}")
        return dict(answer.json())
    raise ChatlakeError("seeding the demo: still rate-limited")


async def _seed(settings: Settings, api_key: str, days: int, per_day: int) -> dict[str, int]:
    from realtime.app import create_app

    app = create_app(settings.model_copy(update={"access_log": False}))
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {api_key}"}
    sent = conversations = 0
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://demo") as client,
    ):
        for name, examples in INTENTS.items():
            answer = await client.put(f"/v1/intents/{name}", json={"examples": examples},
                                      headers=headers)  # fmt: skip
            if answer.status_code != 200:
                raise ChatlakeError(f"seeding the demo: {answer.text}")
        if (await client.post("/v1/nlu/train", headers=headers)).status_code != 200:
            raise ChatlakeError("seeding the demo: training its intent model failed")
        platform = app.state.platform
        now = datetime.now(UTC)
        weights = [weight for weight, _ in SCRIPTS]
        for back in range(days - 1, -1, -1):
            midnight = (now - timedelta(days=back)).replace(hour=0, minute=0, second=0)
            span = (now - midnight).total_seconds() if back == 0 else 86_000
            starts = sorted(rng.uniform(0, span * 0.95) for _ in range(per_day))
            for offset in starts:
                _, script = rng.choices(SCRIPTS, weights)[0]
                user = f"customer-{rng.randrange(per_day * days // 2)}"
                moment = midnight + timedelta(seconds=offset)
                conversation = None
                for turn, text in enumerate(script):
                    stamp = min(moment + timedelta(seconds=20 * turn), now)
                    platform.clock = lambda stamp=stamp: stamp
                    body: dict[str, Any] = {"user_id": user, "text": text.format(
                        order=rng.randrange(10_000, 99_999), user=user)}  # fmt: skip
                    if conversation:
                        body["conversation_id"] = conversation
                    conversation = (await _send(client, headers, body))["conversation_id"]
                    sent += 1
                conversations += 1
    return {"days": days, "conversations": conversations, "messages": sent}


def wait_for_ingest(settings: Settings, tenant_id: str, timeout_s: float = 120.0) -> None:
    """Until the running ingest worker (and on Kafka, the relay before it) has written
    every event of the tenant's stream to the lake."""
    from chatlake.embedded import Services
    from chatlake.keyspace import TenantKeyspace, redis_sync_client

    redis = redis_sync_client(Services(settings).endpoints().redis_url)
    stream = TenantKeyspace(tenant_id).events
    deadline = time.monotonic() + timeout_s

    def waiting() -> None:
        if time.monotonic() > deadline:
            raise ChatlakeError("the ingest worker did not write the demo's events in time")
        time.sleep(0.5)

    try:
        while redis.xlen(stream):  # in the lake (Redis bus), or in Kafka (the relay's)
            waiting()
    finally:
        redis.close()
    if settings.event_bus == "kafka":
        from chatlake.bus import bootstrap_servers
        from lake.kafka_ingest import kafka_consumer, kafka_lag

        consumer = kafka_consumer(bootstrap_servers(settings), 1000)
        try:
            while sum(kafka_lag(consumer, settings.lake_root, settings.kafka_topic).values()):
                waiting()
        finally:
            consumer.close()


@contextmanager
def _output_to(path: Path) -> Iterator[TextIO]:
    """This process's stdout and stderr (the pipeline's and dbt's logs) into `path`;
    yields a handle on the terminal's stderr for progress lines."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, saved_fd in ((1, saved[0]), (2, saved[1])):
                os.dup2(saved_fd, fd)
                os.close(saved_fd)
            terminal.close()


def send_demo_conversations(
    settings: Settings, demo: dict[str, Any], days: int = 4, per_day: int = 30
) -> dict[str, Any]:
    """The demo tenant's intents, model and conversations, through the API code; then
    waits until the running ingest worker has them in the lake. Logs go to
    `$CHATLAKE_HOME/run/seed.log`."""
    log = settings.run_dir / "seed.log"
    with _output_to(log) as terminal:
        print(f"seeding the demo tenant: {days} days of conversations (log: {log})…",
              file=terminal)  # fmt: skip
        sent = asyncio.run(_seed(settings, demo["api_key"], days, per_day))
        wait_for_ingest(settings, demo["tenant_id"])
    return sent


def build_demo(settings: Settings, days: int = 4) -> dict[str, Any]:
    """The pipeline over the demo's days: silver, the marts, the checks, the invoices."""
    from pipelines.run import run_pipeline

    log = settings.run_dir / "seed.log"
    today = datetime.now(UTC).date()
    with _output_to(log) as terminal:
        print("seeding the demo tenant: the pipeline (silver, dbt, invoices)…", file=terminal)
        run = run_pipeline(settings, today - timedelta(days=days - 1), today, bill=True)
    if not run["success"]:
        raise ChatlakeError(f"seeding the demo: the pipeline run failed (see {log})")
    return {"pipeline_seconds": run["seconds"]}
