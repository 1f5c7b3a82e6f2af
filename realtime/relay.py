"""The outbox relay: tenant event streams in Redis → the Kafka events topic
(`CHATLAKE_EVENT_BUS=kafka`; `chatlake relay`, started by `up`).

The API appends each event to its tenant's Redis stream in the same atomic script that
writes the conversation's state (realtime/state.py), and answers only after that: the
stream is a transactional outbox. The relay reads it as the consumer `relay` of the group
`relay`, and for each batch:

1. seals each event under its subject's key (chatlake/bus.py says why) and produces it,
   keyed by conversation, with an idempotent producer and `acks=all`;
2. waits until Kafka has acknowledged every record of the batch (flush);
3. XACKs the entries, then trims each stream of what the group has acknowledged.

A crash between 2 and 3 leaves the batch pending: the next start sends it again, first,
in entry order. So Kafka holds every acknowledged message at least once, and a copy only
where a crash fell between a produce and its XACK; the lake's Kafka ingest drops such a
copy by its (partition, outbox, entry), which makes the lake exactly once.

One relay runs at a time (a lease in Redis, as the ingest worker's): a copy is recognised
because one outbox's entries reach a partition in entry order, which two relays sharing a
stream would not keep. A second `chatlake relay` waits as a standby and takes over when
the lease frees (at once when the holder died on this host, else after the lease's TTL).
Throughput per relay is measured by `chatlake bench ingest --bus kafka`; past it, the
outboxes would be split among relays by tenant (docs/scaling.md).
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatlake.bus import Envelope
from chatlake.keyspace import TenantKeyspace, relay_lease, relay_stats
from chatlake.leases import Lease, LeaseTaken
from chatlake.pii import pseudonymize, tenant_pseudonym_key
from chatlake.streams import event_streams, trim_acknowledged
from chatlake.subject_keys import seal_texts

GROUP = "relay"
CONSUMER = "relay"
FAILPOINT_ENV = "CHATLAKE_RELAY_FAILPOINT"
_log = structlog.get_logger("chatlake.relay")


def _failpoint(name: str) -> None:
    """Crash here, as kill -9 would, when the test harness asks for it."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class RelayBatch:
    entries: dict[str, list[tuple[str, bytes | None]]]  # stream -> [(entry id, event)]

    @property
    def size(self) -> int:
        return sum(len(items) for items in self.entries.values())


@dataclass
class OutboxRelay:
    redis: Redis
    producer: Any  # a kafka.KafkaProducer (idempotent, acks=all)
    topic: str
    pseudonym_key: str
    batch_size: int = 2000
    max_latency_ms: int = 200
    # None: every tenant's outbox; else a shard of them (one relay per shard at a time;
    # shards must not overlap, or one outbox's entries could reach Kafka out of order)
    tenants: frozenset[str] | None = None
    totals: dict[str, int] = field(default_factory=lambda: {"batches": 0, "records": 0})

    def __post_init__(self) -> None:
        shard = "all"
        self._only: set[str] | None = None
        if self.tenants is not None:
            listed = ",".join(sorted(self.tenants)).encode()
            shard = "tenants-" + hashlib.sha256(listed).hexdigest()[:16]
            self._only = {TenantKeyspace(t).events for t in self.tenants}
        self.shard = shard
        self.lease = Lease(self.redis, relay_lease(shard))
        self._groups: set[str] = set()
        self._tenant_keys: dict[str, bytes] = {}

    def streams(self) -> list[str]:
        # the group reads from the first entry: what a Redis-bus ingest left untrimmed too
        return event_streams(self.redis, GROUP, self._groups, self._only)

    def _read(self, start: str, block_ms: int | None) -> RelayBatch | None:
        streams = self.streams()
        if not streams:
            if block_ms:
                time.sleep(block_ms / 1000)
            return None
        reply: Any = self.redis.xreadgroup(
            GROUP, CONSUMER, dict.fromkeys(streams, start), count=self.batch_size, block=block_ms
        )
        entries: dict[str, list[tuple[str, bytes | None]]] = {}
        for stream, items in reply or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            if items:
                entries[name] = [
                    (entry_id.decode(), fields.get(b"event") if fields else None)
                    for entry_id, fields in items
                ]
        return RelayBatch(entries) if entries else None

    def _subject(self, tenant_id: str, user_id: str) -> str:
        key = self._tenant_keys.get(tenant_id)
        if key is None:
            key = self._tenant_keys[tenant_id] = tenant_pseudonym_key(self.pseudonym_key, tenant_id)
        return pseudonymize(user_id, key)

    def send(self, batch: RelayBatch) -> int:
        """Produce the batch, wait for Kafka's acknowledgement of every record, then XACK
        and trim. Returns the records produced."""
        self.lease.check()  # never send under a lease another process may hold now
        futures = []
        for stream, items in batch.entries.items():
            events = [(entry_id, orjson.loads(raw)) for entry_id, raw in items if raw]
            by_tenant: dict[str, list[int]] = {}
            for index, (_, event) in enumerate(events):
                by_tenant.setdefault(event["tenant_id"], []).append(index)
            sealed: dict[int, tuple[str, bytes]] = {}
            for tenant_id, indexes in by_tenant.items():
                subjects = [self._subject(tenant_id, events[i][1]["user_id"]) for i in indexes]
                texts = [orjson.dumps(events[i][1]).decode() for i in indexes]
                tokens = seal_texts(
                    self.redis, tenant_id, list(zip(subjects, texts, strict=True)), bus=True
                )
                for i, subject, token in zip(indexes, subjects, tokens, strict=True):
                    sealed[i] = (subject, token)
            for index, (entry_id, event) in enumerate(events):
                subject, token = sealed[index]
                envelope = Envelope(event["tenant_id"], subject, stream, entry_id)
                futures.append(
                    self.producer.send(
                        self.topic,
                        key=event["conversation_id"].encode(),
                        value=token,
                        headers=envelope.headers(),
                    )
                )
        self.producer.flush()
        for future in futures:
            future.get(timeout=0)  # raises if Kafka refused a record: the batch stays pending
        _failpoint("after_produce")
        with self.redis.pipeline(transaction=False) as pipe:
            for stream, items in batch.entries.items():
                pipe.xack(stream, GROUP, *(entry_id for entry_id, _ in items))
            pipe.execute()
        for stream in batch.entries:
            trim_acknowledged(self.redis, stream, GROUP)
        self.totals["batches"] += 1
        self.totals["records"] += len(futures)
        self.redis.set(
            relay_stats(self.shard),
            orjson.dumps({"last_batch_records": len(futures), "updated_at": time.time(),
                          **self.totals}),
        )  # fmt: skip
        return len(futures)

    def recover(self) -> int:
        """Send again what this relay read and did not acknowledge before it stopped."""
        sent = 0
        while (batch := self._read("0", None)) is not None:
            sent += self.send(batch)
        return sent

    def drain(self) -> int:
        """Recover, then send until the outboxes hold nothing new (`relay --once`)."""
        self.lease.claim("the outbox relay")
        try:
            sent = self.recover()
            while (batch := self._read(">", None)) is not None:
                sent += self.send(batch)
            return sent
        finally:
            self.lease.release()

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Relay until `should_stop()`; a standby while another process holds the lease;
        rides out Redis and Kafka dropping out (what was read stays pending, sent again)."""
        waiting_said = False
        try:
            while not should_stop():
                try:
                    if not self.lease.held.is_set():
                        if not self.lease.try_claim():
                            if not waiting_said:
                                host, pid = self.lease.holder()
                                _log.info("relay_standby", holder_pid=pid, holder_host=host)
                                waiting_said = True
                            _pause(1.0, should_stop)
                            continue
                        self.lease.keep()
                        _log.info("relay_active")
                        waiting_said = False
                    self.recover()
                    while not should_stop():
                        batch = self._read(">", self.max_latency_ms)
                        if batch is not None:
                            self.send(batch)
                except LeaseTaken as exc:
                    _log.warning("relay_lease_lost", error=str(exc))
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    _log.warning("relay_redis_unavailable", error=str(exc))
                    _pause(1.0, should_stop)
                except Exception as exc:  # Kafka away or refusing: the batch stays pending
                    if not _is_kafka_error(exc):
                        raise
                    _log.warning("relay_kafka_unavailable", error=f"{type(exc).__name__}: {exc}")
                    _pause(1.0, should_stop)
        finally:
            self.lease.release()


def _is_kafka_error(exc: BaseException) -> bool:
    from kafka.errors import KafkaError

    return isinstance(exc, KafkaError | TimeoutError)


def _pause(seconds: float, should_stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not should_stop():
        time.sleep(0.1)


def kafka_producer(bootstrap: list[str]) -> Any:
    """The relay's producer: idempotent (no copy from its own retries), every in-sync
    replica's acknowledgement, order kept per partition."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="chatlake-relay",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        retries=2**31 - 1,
        delivery_timeout_ms=120_000,
    )
