"""`chatlake bench ingest`: events from a Redis stream into Delta, against two ceilings.

It appends `--events` realistic message events to a bench tenant's stream, then measures,
in this order and on the same entries:

* `bare_drain`: XREADGROUP + XACK through a consumer group of its own, no decoding: the
  most the stream can hand out;
* `ingest`: the real worker (lake/ingest.py) into a scratch lake: parse, split by table,
  one Delta commit per batch with its app transaction, XACK, trim;
* `write_deltalake`: one `write_deltalake` of the same rows as a single Arrow table: the
  most the table format takes.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deltalake import write_deltalake

from bench.output import write_results
from chatlake.embedded import Services
from chatlake.events import encode, message_event
from chatlake.keyspace import EVENT_STREAMS, TenantKeyspace, redis_sync_client
from chatlake.settings import Settings
from lake.ingest import IngestWorker, split_events
from lake.schemas import MESSAGES_TABLE, PARTITION_BY

BENCH_DIR = Path(__file__).parent
TEXTS = ("hello", "where is my order 12345?", "I'd like to change my delivery address please")


def _fill(redis: Any, stream: str, tenant_id: str, count: int) -> list[bytes]:
    now = datetime.now(UTC)
    events = []
    with redis.pipeline(transaction=False) as pipe:
        for i in range(count):
            event = encode(
                message_event(
                    tenant_id=tenant_id,
                    conversation_id=f"conv-{i // 8}",
                    user_id=f"user-{i // 8 % 5000}",
                    channel="web",
                    direction="in" if i % 2 == 0 else "out",
                    type="text",
                    text=TEXTS[i % len(TEXTS)],
                    intent="greet" if i % 2 == 0 else None,
                    confidence=0.93 if i % 2 == 0 else None,
                    tier=None if i % 2 == 0 else "rules",
                    latency_ms=None if i % 2 == 0 else 1.7,
                    created_at=now,
                )
            )
            events.append(event)
            pipe.xadd(stream, {"event": event})
            if i % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
    return events


def _bare_drain(redis: Any, stream: str, batch: int) -> dict[str, Any]:
    group = "bench-bare"
    redis.xgroup_create(stream, group, id="0")
    started = time.perf_counter()
    drained = 0
    while True:
        reply = redis.xreadgroup(group, "bare", {stream: ">"}, count=batch)
        if not reply:
            break
        items = reply[stream.encode()] if isinstance(reply, dict) else reply[0][1]
        ids = [entry[0] for entry in items]
        redis.xack(stream, group, *ids)
        drained += len(ids)
    seconds = time.perf_counter() - started
    redis.xgroup_destroy(stream, group)
    return {
        "entries": drained,
        "seconds": round(seconds, 3),
        "rows_per_s": round(drained / seconds),
    }


def run(settings: Settings, events: int, batch_size: int, out: str | None) -> dict[str, Any]:
    services = Services(settings)
    services.start()
    redis = redis_sync_client(services.endpoints().redis_url)
    tenant_id = str(uuid.uuid4())
    stream = TenantKeyspace(tenant_id).events
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=settings.home))
    try:
        filled_at = time.perf_counter()
        raw = _fill(redis, stream, tenant_id, events)
        fill_seconds = time.perf_counter() - filled_at
        redis.sadd(EVENT_STREAMS, stream)

        bare = _bare_drain(redis, stream, batch_size)

        worker = IngestWorker(
            redis,
            str(scratch / "lake"),
            consumer=f"bench-{tenant_id[:8]}",
            batch_size=batch_size,
            only_streams=frozenset({stream}),
        )
        started = time.perf_counter()
        results = worker.drain()
        seconds = time.perf_counter() - started
        rows = sum(sum(r.rows.values()) for r in results)
        ingest = {
            "rows": rows,
            "batches": len(results),
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds),
            "stream_left": redis.xlen(stream),
        }

        table = split_events(raw)[MESSAGES_TABLE]
        started = time.perf_counter()
        write_deltalake(str(scratch / "single"), table, partition_by=PARTITION_BY, mode="append")
        single = time.perf_counter() - started
        write = {
            "rows": table.num_rows,
            "seconds": round(single, 3),
            "rows_per_s": round(table.num_rows / single),
        }
    finally:
        redis.delete(stream)
        redis.srem(EVENT_STREAMS, stream)
        shutil.rmtree(scratch, ignore_errors=True)
    results_json = {
        "benchmark": "ingest",
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {
            "events": events,
            "batch_size": batch_size,
            "fill_seconds": round(fill_seconds, 1),
        },
        "ingest": ingest,
        "ceilings": {"bare_drain": bare, "write_deltalake": write},
        "ingest_vs_bare_drain": round(ingest["rows_per_s"] / bare["rows_per_s"], 3),
        "ingest_vs_write_deltalake": round(ingest["rows_per_s"] / write["rows_per_s"], 3),
    }
    write_results(results_json, out, "ingest.json")
    return results_json
