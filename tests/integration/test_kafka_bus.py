"""The event bus on Kafka: the API's Redis streams as the outbox, the relay to a real
Kafka-protocol broker (Tansu), and the lake's Kafka ingest, exactly once, through kills."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from uuid import uuid4

import orjson
import polars as pl
import pytest
from kafka import KafkaConsumer, TopicPartition

from bench.engines import tansu_broker
from chatlake.keyspace import redis_sync_client
from chatlake.pii import pseudonymize, tenant_pseudonym_key
from chatlake.subject_keys import destroy_subject_key, open_texts, prune_subject_keys
from lake.ingest import FAILPOINT_ENV as INGEST_FAILPOINT
from lake.kafka_ingest import KafkaIngestWorker, kafka_consumer
from lake.readers import scan
from lake.schemas import CONVERSATION_EVENTS_TABLE, MESSAGES_TABLE
from realtime.relay import FAILPOINT_ENV as RELAY_FAILPOINT
from tests.utils.factories import send
from tests.utils.processes import until

pytestmark = pytest.mark.scale
CHATLAKE = str(Path(sys.executable).parent / "chatlake")
PARTITIONS = 4


@pytest.fixture
def kafka(tmp_path):
    with tansu_broker(tmp_path / "tansu.log") as bootstrap:
        yield bootstrap


@pytest.fixture
def bus(kafka, own_lake, monkeypatch):
    """This test's topic on the broker, and the settings that name it."""
    topic = f"events-{uuid4().hex[:8]}"
    monkeypatch.setenv("CHATLAKE_EVENT_BUS", "kafka")
    monkeypatch.setenv("CHATLAKE_KAFKA_BOOTSTRAP", kafka)
    monkeypatch.setenv("CHATLAKE_KAFKA_TOPIC", topic)
    monkeypatch.setenv("CHATLAKE_KAFKA_PARTITIONS", str(PARTITIONS))
    from chatlake.settings import get_settings

    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def redis_sync(endpoints):
    client = redis_sync_client(endpoints.redis_url)
    yield client
    client.close()


def talk(client, tenant, users: int, turns: int, prefix: str = "user") -> list[dict]:
    responses = []
    for u in range(users):
        conversation_id = None
        for t in range(turns):
            fields = {"conversation_id": conversation_id} if conversation_id else {}
            body = send(client, tenant, f"my order {t} please", user_id=f"{prefix}-{u}", **fields)
            assert body.status_code == 200, body.text
            conversation_id = body.json()["conversation_id"]
            responses.append(body.json())
    return responses


def cli(args: list[str], failpoints: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ}
    for name in (INGEST_FAILPOINT, RELAY_FAILPOINT):
        env.pop(name, None)
    env.update(failpoints or {})
    return subprocess.run([CHATLAKE, *args], capture_output=True, text=True, env=env, timeout=180)


def relay_once(tenant, failpoints: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return cli(["relay", "--once", "--tenant", tenant.tenant_id], failpoints)


def ingest_once(failpoints: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return cli(["ingest", "--once"], failpoints)


def topic_records(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, 0)
    records: list = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 1.5:
        polled = consumer.poll(timeout_ms=300)
        for batch in polled.values():
            records.extend(batch)
        if polled:
            idle_since = time.monotonic()
    consumer.close()
    return records


def assert_exactly_once(settings, tenant, responses):
    rows = scan(settings.lake_root, MESSAGES_TABLE, tenant.tenant_id).collect()
    assert rows["event_id"].n_unique() == rows.height, "duplicates in bronze/messages"
    inbound = {r["message_id"] for r in responses}
    outbound = {reply["message_id"] for r in responses for reply in r["replies"]}
    assert set(rows.filter(pl.col("direction") == "in")["event_id"]) == inbound
    assert set(rows.filter(pl.col("direction") == "out")["event_id"]) == outbound
    events = scan(settings.lake_root, CONVERSATION_EVENTS_TABLE, tenant.tenant_id).collect()
    assert events["event_id"].n_unique() == events.height, "duplicates in conversation_events"
    return rows


def test_every_acknowledged_message_reaches_the_lake_once_through_kafka_sealed_on_the_way(
    client, tenant, bus, kafka
):
    responses = talk(client, tenant, users=3, turns=4)
    relayed = relay_once(tenant)
    assert relayed.returncode == 0, relayed.stderr
    report = orjson.loads(relayed.stdout)
    assert report["topic"] == bus.kafka_topic and report["partitions"] == PARTITIONS
    assert report["relayed"] >= 2 * len(responses)  # in and out, plus conversation events
    # the topic holds every event, sealed: no user's words, no user id in the clear
    records = topic_records(kafka, bus.kafka_topic)
    assert len(records) == report["relayed"]
    by_conversation: dict[bytes, set[int]] = {}
    for record in records:  # keyed by conversation: one conversation, one partition
        by_conversation.setdefault(record.key, set()).add(record.partition)
    assert len(by_conversation) == 3 and all(len(p) == 1 for p in by_conversation.values())
    for record in records:
        assert b"order" not in record.value and b"user-" not in record.value
        assert dict(record.headers)["tenant"] == tenant.tenant_id.encode()
    ingested = ingest_once()
    assert ingested.returncode == 0, ingested.stderr
    summary = orjson.loads(ingested.stdout)
    assert summary["records"] == len(records) and summary["copies_dropped"] == 0
    rows = assert_exactly_once(bus, tenant, responses)
    assert rows.filter(pl.col("direction") == "in")["text"].str.contains("order").all()
    # nothing left to do: a second run reads nothing new and writes nothing
    again = orjson.loads(ingest_once().stdout)
    assert again["records"] == 0
    assert_exactly_once(bus, tenant, responses)
    status = cli(["ingest", "--status"])
    assert status.returncode == 0, status.stderr
    shown = orjson.loads(status.stdout)
    assert shown["bus"] == "kafka" and len(shown["partitions"]) == PARTITIONS
    held = sum(p["next_offset"][MESSAGES_TABLE] for p in shown["partitions"])
    assert held == len(records)


def test_a_relay_killed_after_kafka_acknowledged_sends_again_and_the_lake_drops_the_copies(
    client, tenant, bus, kafka
):
    responses = talk(client, tenant, users=2, turns=3)
    killed = relay_once(tenant, {RELAY_FAILPOINT: "after_produce"})
    assert killed.returncode == -9, killed.stderr  # kill -9 between Kafka's ack and XACK
    first = len(topic_records(kafka, bus.kafka_topic))
    assert first > 0
    relayed = relay_once(tenant)
    assert relayed.returncode == 0, relayed.stderr
    records = topic_records(kafka, bus.kafka_topic)
    assert len(records) == 2 * first  # the whole batch again: every record twice in Kafka
    ingested = ingest_once()
    assert ingested.returncode == 0, ingested.stderr
    summary = orjson.loads(ingested.stdout)
    assert summary["copies_dropped"] == first
    assert_exactly_once(bus, tenant, responses)


def test_an_ingest_killed_between_its_table_commits_resumes_from_the_lakes_offsets(
    client, tenant, bus
):
    responses = talk(client, tenant, users=3, turns=3)
    assert relay_once(tenant).returncode == 0
    killed = ingest_once({INGEST_FAILPOINT: "kafka_between_tables"})
    assert killed.returncode == -9, killed.stderr
    # the first table has the batch and its offsets, the second has neither
    resumed = ingest_once()
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(bus, tenant, responses)


def test_two_workers_split_the_partitions_and_lose_nothing(client, tenant, bus, kafka, redis_sync):
    responses = talk(client, tenant, users=6, turns=2)
    assert relay_once(tenant).returncode == 0
    workers = [
        KafkaIngestWorker(redis_sync, bus.lake_root, kafka_consumer([kafka], 500),
                          bus.kafka_topic, name=f"w{i}", batch_size=500, max_latency_ms=200)
        for i in range(2)
    ]  # fmt: skip
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop.is_set,)) for w in workers]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            owned = [set(w.leases) for w in workers]
            done = sum(w.totals["records"] for w in workers)
            split = owned[0] | owned[1] == set(range(PARTITIONS)) and not owned[0] & owned[1]
            if all(owned) and split and done and _settled(bus, tenant, responses):
                break
            time.sleep(0.5)
        assert owned[0] | owned[1] == set(range(PARTITIONS)) and not owned[0] & owned[1]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for worker in workers:
            worker.consumer.close()
    assert_exactly_once(bus, tenant, responses)


def _settled(settings, tenant, responses) -> bool:
    try:
        rows = scan(settings.lake_root, MESSAGES_TABLE, tenant.tenant_id).collect()
    except Exception:
        return False
    return rows.height >= 2 * len(responses)


def test_an_erased_subjects_records_stay_unreadable_in_kafka_and_never_reach_the_lake(
    client, tenant, other_tenant, bus, redis_sync
):
    kept = talk(client, tenant, users=1, turns=2, prefix="kept")
    talk(client, tenant, users=1, turns=2, prefix="erased")
    assert relay_once(tenant).returncode == 0
    # what erasure's Redis step does: the subject's key is destroyed
    pseudonym = pseudonymize("erased-0", tenant_pseudonym_key(bus.secret("pseudonym_key"),
                                                             tenant.tenant_id))  # fmt: skip
    assert destroy_subject_key(redis_sync, tenant.tenant_id, pseudonym)
    ingested = ingest_once()
    assert ingested.returncode == 0, ingested.stderr
    assert orjson.loads(ingested.stdout)["erased_dropped"] > 0
    rows = scan(bus.lake_root, MESSAGES_TABLE, tenant.tenant_id).collect()
    assert set(rows["user_id"]) == {"kept-0"}
    expected = {r["message_id"] for r in kept} | {
        reply["message_id"] for r in kept for reply in r["replies"]
    }
    assert set(rows["event_id"]) == expected and rows.height == len(expected)


def test_kafka_without_bootstrap_servers_is_a_clear_error(monkeypatch, own_lake):
    monkeypatch.setenv("CHATLAKE_EVENT_BUS", "kafka")
    monkeypatch.delenv("CHATLAKE_KAFKA_BOOTSTRAP", raising=False)
    for args in (["relay", "--once"], ["ingest", "--once"], ["serve"]):
        result = cli(args)
        assert result.returncode != 0
        assert "CHATLAKE_KAFKA_BOOTSTRAP" in result.stderr
        assert "Traceback" not in result.stderr


def test_pruning_the_review_queues_keys_leaves_the_bus_keys_so_nothing_waiting_is_dropped(
    client, tenant, bus, redis_sync
):
    responses = talk(client, tenant, users=2, turns=2)
    assert relay_once(tenant).returncode == 0
    # the review queue's rebuild destroys the keys of subjects it holds nothing of: every one
    prune_subject_keys(redis_sync, tenant.tenant_id, keep=set())
    ingested = ingest_once()
    assert ingested.returncode == 0, ingested.stderr
    assert orjson.loads(ingested.stdout)["erased_dropped"] == 0
    assert_exactly_once(bus, tenant, responses)


def test_an_erasure_on_kafka_certifies_and_what_the_topic_keeps_of_the_subject_stays_unreadable(
    client, tenant, bus, kafka, redis_sync
):
    kept = talk(client, tenant, users=1, turns=2, prefix="kept")
    talk(client, tenant, users=1, turns=2, prefix="gone")
    assert relay_once(tenant).returncode == 0
    assert ingest_once().returncode == 0  # in the lake
    talk(client, tenant, users=1, turns=1, prefix="gone")  # in Kafka only, not yet read
    assert relay_once(tenant).returncode == 0
    erased = cli(["erase", "--tenant", tenant.tenant_id, "--user", "gone-0"])
    assert erased.stdout, erased.stderr[-3000:]
    certificate = orjson.loads(erased.stdout)
    assert certificate["verification"]["passed"], certificate["verification"]
    assert bus.kafka_topic in certificate["stores"]["redis"]["kafka"]
    lake = {t["table"]: t for t in certificate["stores"]["lake"]}
    assert lake["bronze/messages"]["rows_deleted"] >= 4
    ingested = orjson.loads(ingest_once().stdout)  # the record still waiting: dropped
    assert ingested["erased_dropped"] >= 2 and ingested["rows"].get(MESSAGES_TABLE, 0) == 0
    rows = scan(bus.lake_root, MESSAGES_TABLE, tenant.tenant_id).collect()
    assert set(rows["user_id"]) == {"kept-0"}
    expected = {r["message_id"] for r in kept} | {
        reply["message_id"] for r in kept for reply in r["replies"]
    }
    assert set(rows["event_id"]) == expected
    # the topic still holds the subject's records, sealed, and none can be opened now
    pseudonym = pseudonymize("gone-0", tenant_pseudonym_key(bus.secret("pseudonym_key"),
                                                           tenant.tenant_id))  # fmt: skip
    records = topic_records(kafka, bus.kafka_topic)
    theirs = [r.value for r in records if dict(r.headers)["subject"] == pseudonym.encode()]
    assert len(theirs) >= 6 and not any(b"gone" in value for value in theirs)
    opened = open_texts(redis_sync, tenant.tenant_id, [(pseudonym, v) for v in theirs], bus=True)
    assert opened == [None] * len(theirs)


def test_a_second_relay_waits_as_a_standby_and_takes_over_when_the_first_stops(
    client, tenant, bus, kafka, redis_sync
):
    from realtime.relay import OutboxRelay, kafka_producer

    def relay() -> OutboxRelay:
        return OutboxRelay(redis_sync, kafka_producer([kafka]), bus.kafka_topic,
                           bus.secret("pseudonym_key"), max_latency_ms=100,
                           tenants=frozenset({tenant.tenant_id}))  # fmt: skip

    first, second = relay(), relay()
    stops = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=r.run, args=(s.is_set,)) for r, s in
               zip((first, second), stops, strict=True)]  # fmt: skip
    threads[0].start()
    until(lambda: first.lease.held.is_set(), 30, "the first relay did not start")
    threads[1].start()
    before = talk(client, tenant, users=1, turns=2, prefix="before")
    until(lambda: first.totals["records"] > 0, 30, "the first relay sent nothing")
    assert second.totals["records"] == 0 and not second.lease.held.is_set()  # a standby
    stops[0].set()
    threads[0].join(timeout=30)
    after = talk(client, tenant, users=1, turns=2, prefix="after")
    until(lambda: second.totals["records"] > 0, 30, "the standby did not take over")
    stops[1].set()
    threads[1].join(timeout=30)
    for worker in (first, second):
        worker.producer.close()
    assert ingest_once().returncode == 0
    assert_exactly_once(bus, tenant, before + after)
