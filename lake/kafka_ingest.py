"""The Kafka ingest worker: the events topic → Delta bronze tables, exactly once
(`CHATLAKE_EVENT_BUS=kafka`; `chatlake ingest` then runs this instead of the Redis one).

The way kafka-delta-ingest does it: partitions are assigned to workers (no consumer-group
rebalance), and the offsets live in the lake, not in the broker. Each Delta commit carries,
as app transactions, the next offset of every partition its batch read
(`kafka:<topic>:<partition>`), so a commit and its offsets are one atomic step; a worker
(re)starting on a partition seeks to the smallest next offset the bronze tables hold for
it, and each table keeps only the records past its own.

Copies: the relay re-sends what it produced before a crash and had not yet acknowledged in
Redis (realtime/relay.py). One outbox's entries reach a partition in entry order, so a copy
is a record whose (partition, outbox, entry) is not past the highest seen; each commit
also carries that high-water mark per (partition, outbox) it advanced
(`outbox:<topic>:<partition>:<outbox>`, the entry id as one integer), and the record is
dropped.

Erased subjects: a record's event is sealed under its subject's key; erasure destroys the
key, so a record of an erased subject that no worker had read yet is dropped (counted as
`erased`), never written.

Sharing the partitions: each worker heartbeats in a sorted set; the live workers, sorted by
name, take the partitions round-robin (worker i of n: partitions p with p % n == i), each
partition under a lease (chatlake/leases.py) so that two workers never commit for one
partition at once. A worker that joins or leaves moves partitions within a lease period;
a partition changes hands only between batches. Several workers commit to one table side
by side: their commits name different app transactions, which delta-rs rebases.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import structlog
from deltalake import DeltaTable, Transaction
from deltalake.exceptions import DeltaError
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatlake.bus import Envelope, entry_version, topic_partitions
from chatlake.keyspace import kafka_ingest_stats, kafka_ingest_workers, kafka_partition_lease
from chatlake.leases import LEASE_MS, Lease
from chatlake.subject_keys import open_texts
from lake.ingest import MAX_BACKOFF_S, _failpoint, split_events
from lake.schemas import BRONZE_TABLES, CONVERSATION_EVENTS_TABLE, MESSAGES_TABLE
from lake.writer import DeltaAppender

_log = structlog.get_logger("chatlake.ingest.kafka")


def offset_app_id(topic: str, partition: int) -> str:
    return f"kafka:{topic}:{partition}"


def outbox_app_id(topic: str, partition: int, outbox: str) -> str:
    return f"outbox:{topic}:{partition}:{outbox}"


@dataclass
class Record:
    partition: int
    offset: int
    envelope: Envelope
    table: str
    event: bytes  # the event's JSON, opened


@dataclass
class KafkaBatch:
    records: list[Record]
    next_offsets: dict[int, int]  # partition -> the offset after the last one read
    erased: int = 0
    foreign: int = 0

    @property
    def size(self) -> int:
        return sum(self.next_offsets.values())


@dataclass
class KafkaBatchResult:
    records: int
    rows: dict[str, int]
    copies: int
    erased: int
    seconds: float


def select_rows(
    table: DeltaTable, topic: str, batch: KafkaBatch, name: str
) -> tuple[pa.Table | None, list[Transaction], int]:
    """What of `batch` table `name` does not hold yet, given its app transactions: records
    past its next offset per partition, and past its high-water mark per (partition,
    outbox); the transactions that record the batch; the copies left out."""
    next_offset: dict[int, int] = {
        p: table.transaction_version(offset_app_id(topic, p)) or 0 for p in batch.next_offsets
    }
    marks: dict[tuple[int, str], int] = {}
    advanced: set[tuple[int, str]] = set()
    kept: list[bytes] = []
    copies = 0
    for record in batch.records:
        if record.offset < next_offset[record.partition]:
            continue  # in this table already (a batch re-read after a crash)
        mark_key = (record.partition, record.envelope.outbox)
        if mark_key not in marks:
            app_id = outbox_app_id(topic, *mark_key)
            marks[mark_key] = table.transaction_version(app_id) or 0
        version = entry_version(record.envelope.entry)
        if version <= marks[mark_key]:
            copies += record.table == name
            continue  # a copy the relay sent again
        marks[mark_key] = version
        if record.table == name:
            advanced.add(mark_key)
            kept.append(record.event)
    transactions = [
        Transaction(app_id=offset_app_id(topic, p), version=v)
        for p, v in batch.next_offsets.items()
        if v > next_offset[p]
    ]
    transactions += [Transaction(app_id=outbox_app_id(topic, *k), version=marks[k])
                     for k in sorted(advanced)]  # fmt: skip
    rows = split_events(kept).get(name) if kept else None
    return rows, transactions, copies


@dataclass
class KafkaIngestWorker:
    redis: Redis
    lake_root: str
    consumer: Any  # a kafka.KafkaConsumer without a group (assigned partitions)
    topic: str
    name: str = field(default_factory=lambda: f"{socket.gethostname()}-kafka-1")
    batch_size: int = 5000
    max_latency_ms: int = 1000
    fixed_partitions: list[int] | None = None  # None: share the topic's with live workers
    join: bool = True  # heartbeat as a member (`--once` takes only free partitions)
    on_batch: Callable[[KafkaBatchResult], None] | None = None

    def __post_init__(self) -> None:
        self.appenders = {name: DeltaAppender(self.lake_root, name) for name in BRONZE_TABLES}
        self.leases: dict[int, Lease] = {}
        self._members: list[str] = []
        self.totals = {"batches": 0, "records": 0, "rows": 0, "copies": 0, "erased": 0}

    # --- partitions -------------------------------------------------------------------

    def share(self) -> list[int]:
        """The partitions this worker should own now."""
        partitions = topic_partitions(self.consumer, self.topic)
        if self.fixed_partitions is not None:
            return [p for p in partitions if p in self.fixed_partitions]
        if not self.join:
            return partitions  # `--once`: whatever is free
        now = int(time.time() * 1000)
        members_key = kafka_ingest_workers(self.topic)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(members_key, {self.name: now + LEASE_MS})
            pipe.zremrangebyscore(members_key, "-inf", now)
            pipe.zrange(members_key, 0, -1)
            members = sorted(m.decode() for m in pipe.execute()[2])
        self._members = members
        index, count = members.index(self.name), len(members)
        return [p for p in partitions if p % count == index]

    def rebalance(self) -> bool:
        """Take the partitions of this worker's share that are free, give back the others,
        renew the rest; seek each newly taken one to where the lake says. True when this
        worker holds its whole share."""
        wanted = set(self.share())
        changed = False
        for partition in sorted(set(self.leases) - wanted):
            self.leases.pop(partition).release()
            changed = True
        for partition, lease in list(self.leases.items()):
            try:
                lease.renew()
            except Exception:
                del self.leases[partition]  # lapsed: another worker may have it now
                changed = True
        for partition in sorted(wanted - set(self.leases)):
            lease = Lease(self.redis, kafka_partition_lease(self.topic, partition))
            if lease.try_claim():
                self.leases[partition] = lease
                changed = True
        if changed:
            self._assign()
        return set(self.leases) == wanted

    def _joined_or_left(self) -> bool:
        """Whether the live workers changed since the last share was computed."""
        if not self.join or self.fixed_partitions is not None:
            return False
        found: Any = self.redis.zrange(kafka_ingest_workers(self.topic), 0, -1)
        return sorted(m.decode() for m in found) != self._members

    def _assign(self) -> None:
        from kafka import TopicPartition

        owned = [TopicPartition(self.topic, p) for p in sorted(self.leases)]
        self.consumer.assign(owned)
        for tp in owned:
            self.consumer.seek(tp, self.resume_offset(tp.partition))

    def resume_offset(self, partition: int) -> int:
        """The smallest next offset any bronze table holds for the partition (0: none)."""
        app_id = offset_app_id(self.topic, partition)
        offsets = []
        for appender in self.appenders.values():
            appender.refresh()
            offsets.append(appender.table.transaction_version(app_id) or 0)
        return min(offsets)

    def release(self) -> None:
        for lease in self.leases.values():
            lease.release()
        self.leases.clear()
        if self.join and self.fixed_partitions is None:
            self.redis.zrem(kafka_ingest_workers(self.topic), self.name)

    # --- batches ----------------------------------------------------------------------

    def poll(self, block_ms: int) -> KafkaBatch | None:
        """Records of the owned partitions, up to `batch_size`, waiting at most `block_ms`
        for the first and the batch to fill."""
        if not self.leases:
            time.sleep(block_ms / 1000)
            return None
        deadline = time.monotonic() + block_ms / 1000
        raw: list[Any] = []
        while len(raw) < self.batch_size:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            polled = self.consumer.poll(timeout_ms=left, max_records=self.batch_size - len(raw))
            for records in polled.values():
                raw.extend(records)
            if not polled or left == 0:
                break
        if not raw:
            return None
        return self._open(raw)

    def _open(self, raw: list[Any]) -> KafkaBatch:
        """The records' events opened with their subjects' keys, in partition order."""
        batch = KafkaBatch(records=[], next_offsets={})
        sealed: dict[str, list[tuple[Any, Envelope]]] = {}
        for message in raw:
            batch.next_offsets[message.partition] = max(
                batch.next_offsets.get(message.partition, 0), message.offset + 1
            )
            envelope = Envelope.from_headers(message.headers)
            if envelope is None:
                batch.foreign += 1
            else:
                sealed.setdefault(envelope.tenant_id, []).append((message, envelope))
        for tenant_id, items in sealed.items():
            opened = open_texts(
                self.redis, tenant_id, [(e.subject, m.value) for m, e in items], bus=True
            )
            for (message, envelope), text in zip(items, opened, strict=True):
                if text is None:  # the subject's key is gone: erased
                    batch.erased += 1
                    continue
                event = text.encode()
                is_message = orjson.loads(event).get("event_type") == "message"
                table = MESSAGES_TABLE if is_message else CONVERSATION_EVENTS_TABLE
                batch.records.append(
                    Record(message.partition, message.offset, envelope, table, event)
                )
        batch.records.sort(key=lambda r: (r.partition, r.offset))
        return batch

    def commit(self, batch: KafkaBatch) -> KafkaBatchResult:
        """One commit per bronze table, each of what it does not hold yet, with the batch's
        offsets; every table gets a commit (an empty one when no row is new), so every
        table's offsets move with the batch."""
        started = time.perf_counter()
        for partition in batch.next_offsets:
            lease = self.leases.get(partition)
            if lease is None:
                raise RuntimeError(f"partition {partition} read without its lease")
            lease.renew()  # LeaseTaken if lost: the batch is read again by the new owner
        rows: dict[str, int] = {}
        copies = 0
        for name, appender in self.appenders.items():
            picked: dict[str, Any] = {}

            def select(
                table: DeltaTable, name: str = name, picked: dict[str, Any] = picked
            ) -> tuple[pa.Table, list[Transaction]] | None:
                table_rows, transactions, table_copies = select_rows(table, self.topic, batch, name)
                picked.update(rows=table_rows, copies=table_copies)
                if not transactions:
                    return None
                if table_rows is None:
                    table_rows = BRONZE_TABLES[name][1].empty_table()
                return table_rows, transactions

            appender.append_selected(select, {"writer": f"kafka-ingest:{self.name}"})
            _failpoint("kafka_between_tables")
            rows[name] = picked["rows"].num_rows if picked.get("rows") is not None else 0
            copies += picked.get("copies", 0)
        result = KafkaBatchResult(
            records=len(batch.records),
            rows=rows,
            copies=copies,
            erased=batch.erased,
            seconds=time.perf_counter() - started,
        )
        self._record(result)
        return result

    def _record(self, result: KafkaBatchResult) -> None:
        self.totals["batches"] += 1
        self.totals["records"] += result.records
        self.totals["rows"] += sum(result.rows.values())
        self.totals["copies"] += result.copies
        self.totals["erased"] += result.erased
        stats = {
            "consumer": self.name,
            "bus": "kafka",
            "partitions": sorted(self.leases),
            "last_batch_records": result.records,
            "last_batch_seconds": round(result.seconds, 4),
            "rows_per_s": round(sum(result.rows.values()) / result.seconds, 1)
            if result.seconds
            else None,
            "updated_at": time.time(),
            **self.totals,
        }
        self.redis.hset(kafka_ingest_stats(self.topic), self.name, orjson.dumps(stats))
        if self.on_batch:
            self.on_batch(result)

    # --- loops ------------------------------------------------------------------------

    def drain(self) -> list[KafkaBatchResult]:
        """`ingest --once`: take the partitions no live worker holds, commit until a poll
        finds nothing new, give them back."""
        results = []
        try:
            self.rebalance()
            while (batch := self.poll(self.max_latency_ms)) is not None:
                results.append(self.commit(batch))
        finally:
            self.release()
        return results

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Commit batches until `should_stop()`, rebalancing between them; on a Redis,
        Kafka or lake error, back off and resume from the lake's offsets."""
        backoff = 0.5
        last_rebalance = 0.0
        settled = False  # holding the whole share: look again every third of a lease
        try:
            while not should_stop():
                try:
                    every = LEASE_MS / 3000 if settled else 1.0
                    if time.monotonic() - last_rebalance > every or self._joined_or_left():
                        settled = self.rebalance()
                        last_rebalance = time.monotonic()
                    batch = self.poll(self.max_latency_ms)
                    if batch is not None:
                        self.commit(batch)
                    backoff = 0.5
                except (RedisConnectionError, RedisTimeoutError, DeltaError, OSError) as exc:
                    self._recover(exc, backoff, should_stop)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                except Exception as exc:
                    if not _is_kafka_or_lease_error(exc):
                        raise
                    self._recover(exc, backoff, should_stop)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    last_rebalance = 0.0
        finally:
            self.release()

    def _recover(self, exc: BaseException, backoff: float, should_stop: Callable[[], bool]) -> None:
        """After a failed batch: wait, then seek every owned partition back to the lake's
        offsets (what was read and not committed is read again)."""
        _log.warning("kafka_ingest_error", worker=self.name,
                     error=f"{type(exc).__name__}: {exc}", retry_in_s=backoff)  # fmt: skip
        deadline = time.monotonic() + backoff
        while time.monotonic() < deadline and not should_stop():
            time.sleep(0.1)
        try:
            self._assign()
        except Exception as again:  # still down: the next round tries again
            _log.warning("kafka_ingest_reseek_failed", worker=self.name, error=str(again))


def _is_kafka_or_lease_error(exc: BaseException) -> bool:
    from kafka.errors import KafkaError

    from chatlake.leases import LeaseTaken

    return isinstance(exc, KafkaError | LeaseTaken | TimeoutError)


def kafka_consumer(bootstrap: list[str], batch_size: int) -> Any:
    """A consumer without a group: partitions are assigned by the workers themselves and
    offsets kept in the lake."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="chatlake-ingest",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch_size,
    )


def kafka_lag(consumer: Any, lake_root: str, topic: str, cap: int = 100_000) -> dict[int, int]:
    """Per partition, the records past the smallest next offset the bronze tables hold:
    counted by reading them (up to `cap` in all), not from the broker's end offsets, which
    a test broker such as Tansu reports per batch rather than per record."""
    from kafka import TopicPartition

    tables = [DeltaAppender(lake_root, name).table for name in BRONZE_TABLES]
    partitions = [TopicPartition(topic, p) for p in topic_partitions(consumer, topic)]
    consumer.assign(partitions)
    for tp in partitions:
        app_id = offset_app_id(topic, tp.partition)
        consumer.seek(tp, min(t.transaction_version(app_id) or 0 for t in tables))
    lag = {tp.partition: 0 for tp in partitions}
    while sum(lag.values()) < cap:
        polled = consumer.poll(timeout_ms=500, max_records=10_000)
        if not polled:
            break
        for tp, records in polled.items():
            lag[tp.partition] += len(records)
    return lag


def kafka_status(redis: Redis, consumer: Any, lake_root: str, topic: str) -> dict[str, Any]:
    """`chatlake ingest --status` on Kafka: per partition the next offset each bronze table
    holds, the records not yet in the lake and the worker that owns it; the live workers
    and their last batches; the bronze tables' versions."""
    tables = {name: DeltaAppender(lake_root, name).table for name in BRONZE_TABLES}
    lag = kafka_lag(consumer, lake_root, topic)
    partitions = []
    for partition in topic_partitions(consumer, topic):
        owner: Any = redis.get(kafka_partition_lease(topic, partition))
        partitions.append(
            {
                "partition": partition,
                "next_offset": {
                    name: table.transaction_version(offset_app_id(topic, partition)) or 0
                    for name, table in tables.items()
                },
                "lag": lag.get(partition, 0),
                "owner": owner.decode().rsplit(":", 1)[0] if owner else None,
            }
        )
    stats = [orjson.loads(raw) for raw in redis.hvals(kafka_ingest_stats(topic))]
    workers: Any = redis.zrange(kafka_ingest_workers(topic), 0, -1)
    return {
        "bus": "kafka",
        "topic": topic,
        "partitions": partitions,
        "lag": sum(lag.values()),
        "workers": sorted(m.decode() for m in workers),
        "consumers": sorted(stats, key=lambda s: s["consumer"]),
        "tables": {name: {"version": table.version()} for name, table in tables.items()},
    }
