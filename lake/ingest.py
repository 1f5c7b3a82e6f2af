"""The ingest worker: tenant event streams → Delta bronze tables, exactly once.

Each worker is a consumer (its name stable across restarts) of the group `lake` on every
tenant's event stream. A batch goes through these steps, and a crash at any point is
repaired by the next start of the same consumer (or, after `reap_after_ms`, by another
worker recovering on its behalf):

1. XREADGROUP up to `batch_size` entries (blocking at most `max_latency_ms`);
2. record the batch as in flight in Redis: its version and its entry ids;
3. commit its rows to each table in one Delta commit per table, tagged with the app
   transaction (`ingest:<consumer>`, version); a table that already holds that version
   is skipped, so a retried batch never writes twice;
4. XACK the entries and forget the in-flight record;
5. trim each stream of the entries every consumer has acknowledged (only those are in the
   lake).

On start, the consumer's own pending entries (delivered, never acknowledged) are the
batch a crash interrupted; they are committed again under the version recorded in step 2
(or a new one if the crash came before it), which steps 3 and 4 make safe.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import structlog
from redis import ConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from chatlake.keyspace import EVENT_STREAMS, ingest_inflight, ingest_stats
from lake.schemas import CONVERSATION_EVENTS_TABLE, MESSAGES_TABLE, TABLES
from lake.streams import GROUP, stream_status
from lake.writer import DeltaAppender, open_table, table_uri

# Every event field of every table, nullable: one parse, then a split by event type.
_ALL_FIELDS: dict[str, pa.Field] = {}
for _event_schema, _ in TABLES.values():
    for _field in _event_schema:
        _ALL_FIELDS.setdefault(_field.name, _field.with_nullable(True))
ANY_EVENT = pa.schema(list(_ALL_FIELDS.values()))
FAILPOINT_ENV = "CHATLAKE_INGEST_FAILPOINT"
_log = structlog.get_logger("chatlake.ingest")


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-1"


def _failpoint(name: str) -> None:
    """Crash here, as kill -9 would, when the test harness asks for it."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _raw_reply(response: Any, **_: Any) -> Any:
    return response


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def split_events(raw_events: list[bytes]) -> dict[str, pa.Table]:
    """Parse JSON events into one Arrow table per lake table (with the `date` column)."""
    parsed = pj.read_json(
        io.BytesIO(b"\n".join(raw_events)),
        parse_options=pj.ParseOptions(
            explicit_schema=ANY_EVENT, unexpected_field_behavior="ignore"
        ),
    )
    is_message = pc.equal(parsed.column("event_type"), "message")
    tables = {}
    for name, mask in (
        (MESSAGES_TABLE, is_message),
        (CONVERSATION_EVENTS_TABLE, pc.invert(is_message)),
    ):
        event_schema, table_schema = TABLES[name]
        subset = parsed.filter(mask)
        if subset.num_rows == 0:
            continue
        subset = subset.select(event_schema.names).cast(event_schema)
        dates = pc.cast(subset.column("created_at"), pa.date32())
        tables[name] = subset.append_column(table_schema.field("date"), dates)
    return tables


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Batch:
    """Entries read from the streams: per stream, (entry id, event or None if trimmed)."""

    entries: dict[str, list[tuple[str, bytes | None]]]
    version: int = 0

    @property
    def size(self) -> int:
        return sum(len(items) for items in self.entries.values())

    @property
    def events(self) -> list[bytes]:
        return [raw for items in self.entries.values() for _, raw in items if raw is not None]

    @property
    def ranges(self) -> dict[str, tuple[str, str]]:
        """Per stream, the first and last entry id: with the consumer's pending list this
        names the batch exactly, in a few bytes whatever its size."""
        return {stream: (items[0][0], items[-1][0]) for stream, items in self.entries.items()}

    def split(self, ranges: dict[str, list[str]]) -> tuple[Batch, Batch]:
        """The entries inside `ranges`, and the rest."""
        inside: dict[str, list[tuple[str, bytes | None]]] = {}
        rest: dict[str, list[tuple[str, bytes | None]]] = {}
        for stream, items in self.entries.items():
            low, high = (_id_key(x) for x in ranges.get(stream, ("0-0", "0-0")))
            for item in items:
                inside_range = stream in ranges and low <= _id_key(item[0]) <= high
                (inside if inside_range else rest).setdefault(stream, []).append(item)
        return Batch(inside), Batch(rest)


@dataclass
class BatchResult:
    version: int
    entries: int
    rows: dict[str, int]
    written: dict[str, bool]
    seconds: float


@dataclass
class IngestWorker:
    redis: Redis
    lake_root: str
    consumer: str = field(default_factory=default_consumer_name)
    batch_size: int = 5000
    max_latency_ms: int = 1000
    reap_after_ms: int = 300_000
    trim_every_s: float = 1.0
    only_streams: frozenset[str] | None = None  # None: every tenant stream
    on_batch: Callable[[BatchResult], None] | None = None

    def __post_init__(self) -> None:
        self.app_id = f"ingest:{self.consumer}"
        # Reads go through a client of their own that never retries: a retried XREADGROUP
        # whose first reply was lost would leave those entries pending, unseen, while the
        # worker runs on. A failed read surfaces instead, and `run` recovers from it.
        pool_kwargs = {
            **self.redis.connection_pool.connection_kwargs,
            "retry": Retry(NoBackoff(), 0),
        }
        self.reader = Redis(connection_pool=ConnectionPool(**pool_kwargs))
        # XREADGROUP replies are used as hiredis parses them: building a dict per entry
        # costs more than the rest of the read.
        self.reader.set_response_callback("XREADGROUP", _raw_reply)
        self.appenders = {name: DeltaAppender(self.lake_root, name) for name in TABLES}
        self.version = max(
            appender.committed_version(self.app_id, refresh=True)
            for appender in self.appenders.values()
        )
        self._groups: set[str] = set()
        self._untrimmed: set[str] = set()
        self._last_trim = 0.0
        self.totals = {"batches": 0, "entries": 0, "rows": 0}

    # --- streams and groups -------------------------------------------------------------

    def streams(self) -> list[str]:
        members: Any = self.redis.smembers(EVENT_STREAMS)
        streams = sorted(s.decode() for s in members)
        if self.only_streams is not None:
            streams = [s for s in streams if s in self.only_streams]
        for stream in streams:
            if stream not in self._groups:
                try:
                    self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                self._groups.add(stream)
        return streams

    def _read(self, starts: Any, block_ms: int | None, count: int | None = None) -> Batch | None:
        if not starts:
            if block_ms:
                time.sleep(block_ms / 1000)
            return None
        reply: Any = self.reader.xreadgroup(
            GROUP, self.consumer, starts, count=count or self.batch_size, block=block_ms
        )
        entries: dict[str, list[tuple[str, bytes | None]]] = {}
        # Raw reply (see __post_init__): a map of streams under RESP3, pairs under RESP2;
        # an entry's fields are [b"event", <json>], or nil once trimmed.
        for stream, items in reply.items() if isinstance(reply, dict) else reply or []:
            if items:
                entries[stream.decode()] = [
                    (entry_id.decode(), fields[1] if fields else None) for entry_id, fields in items
                ]
        return Batch(entries) if entries else None

    def _read_pending(self) -> Batch | None:
        """Every entry delivered to this consumer and never acknowledged."""
        entries: dict[str, list[tuple[str, bytes | None]]] = {}
        starts = dict.fromkeys(self.streams(), "0")
        while starts:
            batch = self._read(starts, block_ms=None, count=10_000)
            if batch is None:
                break
            starts = {}
            for stream, items in batch.entries.items():
                entries.setdefault(stream, []).extend(items)
                starts[stream] = items[-1][0]
        return Batch(entries) if entries else None

    # --- the batch cycle ----------------------------------------------------------------

    def recover(self) -> list[BatchResult]:
        """Commit (or just acknowledge) what a crash of this consumer left pending: first
        the batch that was in flight, under its own version, then anything read after it."""
        inflight = self.redis.hgetall(ingest_inflight(self.consumer))
        pending = self._read_pending()
        results = []
        if pending is not None and inflight:
            batch, pending = pending.split(orjson.loads(inflight[b"ranges"]))
            batch.version = int(inflight[b"version"])
            if batch.size:
                results.append(self._commit(batch))
        self.redis.delete(ingest_inflight(self.consumer))
        if pending is not None and pending.size:
            pending.version = self.version + 1
            results.append(self._commit(pending))
        return results

    def _prefetched(self, block_ms: int | None, should_stop: Callable[[], bool]) -> Any:
        """Batches read one ahead on a thread, so Redis reads overlap the Delta commits.

        At most two batches are delivered and unacknowledged at a time; `recover` sorts
        them out after a crash (the in-flight one by its recorded range).
        """
        batches: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        failure: list[BaseException] = []

        def reader() -> None:
            try:
                while not should_stop():
                    batch = self._read(dict.fromkeys(self.streams(), ">"), block_ms)
                    if batch is None and block_ms is None:
                        break
                    if batch is not None:
                        batches.put(batch)
            except BaseException as exc:  # handed to the committing thread
                failure.append(exc)
            finally:
                batches.put(None)

        thread = threading.Thread(target=reader, name="ingest-reader", daemon=True)
        thread.start()
        while (batch := batches.get()) is not None:
            yield batch
        thread.join()
        if failure:
            raise failure[0]

    def _commit(self, batch: Batch) -> BatchResult:
        started = time.perf_counter()
        missing = batch.size - len(batch.events)
        if missing:  # delivered, never acknowledged, yet trimmed: must not pass unnoticed
            self.totals["missing"] = self.totals.get("missing", 0) + missing
            _log.error("ingest_entries_missing", consumer=self.consumer, entries=missing)
        inflight = ingest_inflight(self.consumer)
        self.redis.hset(
            inflight, mapping={"version": batch.version, "ranges": orjson.dumps(batch.ranges)}
        )
        _failpoint("before_commit")
        tables = split_events(batch.events) if batch.events else {}
        written = {
            name: self.appenders[name].append(
                rows, self.app_id, batch.version, {"entries": str(batch.size)}
            )
            for name, rows in tables.items()
        }
        _failpoint("after_commit")
        with self.redis.pipeline(transaction=False) as pipe:
            for stream, items in batch.entries.items():
                pipe.xack(stream, GROUP, *(entry_id for entry_id, _ in items))
            pipe.delete(inflight)
            pipe.execute()
        self.version = batch.version
        self._untrimmed.update(batch.entries)
        # Trim at most once a second under load, and as soon as the worker has caught up
        # (a batch short of full), so an idle stream holds nothing that is in the lake.
        caught_up = batch.size < self.batch_size
        if caught_up or time.monotonic() - self._last_trim >= self.trim_every_s:
            self.trim()
        result = BatchResult(
            version=batch.version,
            entries=batch.size,
            rows={name: rows.num_rows for name, rows in tables.items()},
            written=written,
            seconds=time.perf_counter() - started,
        )
        self._record(result)
        return result

    def trim(self) -> None:
        """Drop from the streams this worker read the entries every consumer acknowledged."""
        streams, self._untrimmed = self._untrimmed, set()
        self._last_trim = time.monotonic()
        for stream in streams:
            # The last delivered id first: anything delivered after this read has a larger
            # id and survives the trim, whether or not XPENDING below saw it.
            group = next(g for g in self.redis.xinfo_groups(stream) if g["name"].decode() == GROUP)
            min_id = _next_id(group["last-delivered-id"].decode())
            summary = self.redis.xpending(stream, GROUP)
            if summary["pending"] and _id_key(summary["min"].decode()) < _id_key(min_id):
                min_id = summary["min"].decode()
            self.redis.xtrim(stream, minid=min_id, approximate=False)

    def _record(self, result: BatchResult) -> None:
        self.totals["batches"] += 1
        self.totals["entries"] += result.entries
        self.totals["rows"] += sum(result.rows.values())
        stats = {
            "consumer": self.consumer,
            "last_version": result.version,
            "last_batch_entries": result.entries,
            "last_batch_seconds": round(result.seconds, 4),
            "rows_per_s": round(sum(result.rows.values()) / result.seconds, 1)
            if result.seconds
            else None,
            "updated_at": time.time(),
            **self.totals,
        }
        self.redis.hset(ingest_stats(), self.consumer, orjson.dumps(stats))
        if self.on_batch:
            self.on_batch(result)

    # --- other consumers ----------------------------------------------------------------

    def reap_dead_consumers(self) -> list[str]:
        """Recover the pending batch of any consumer idle for `reap_after_ms`, on its behalf."""
        reaped = []
        dead: set[str] = set()
        for stream in self.streams():
            for info in self.redis.xinfo_consumers(stream, GROUP):
                name = info["name"].decode()
                if name != self.consumer and info["pending"] and info["idle"] > self.reap_after_ms:
                    dead.add(name)
        for name in sorted(dead):
            proxy = IngestWorker(self.redis, self.lake_root, consumer=name)
            proxy.recover()
            reaped.append(name)
        return reaped

    # --- loops --------------------------------------------------------------------------

    def drain(self) -> list[BatchResult]:
        """Recover, then commit batches until the streams hold nothing new (`--once`)."""
        results = self.recover()
        results += [self._commit(self._versioned(b)) for b in self._prefetched(None, bool)]
        self.trim()
        return results

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Recover, then commit batches as they come until `should_stop()`. When Redis
        drops out, wait, then recover again: what was delivered but not committed
        (a read whose reply was lost included) is in this consumer's pending entries."""
        last_reap = time.monotonic()
        while not should_stop():
            try:
                self.recover()
                for batch in self._prefetched(self.max_latency_ms, should_stop):
                    self._commit(self._versioned(batch))
                    if time.monotonic() - last_reap > self.reap_after_ms / 2000:
                        self.reap_dead_consumers()
                        last_reap = time.monotonic()
                self.trim()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                _log.warning("ingest_redis_unavailable", consumer=self.consumer, error=str(exc))
                time.sleep(1.0)

    def _versioned(self, batch: Batch) -> Batch:
        batch.version = self.version + 1
        return batch


def ingest_status(redis: Redis, lake_root: str) -> dict[str, Any]:
    """`stream_status` plus the version of each lake table."""
    status = stream_status(redis)
    tables = {}
    for name in TABLES:
        table = open_table(table_uri(lake_root, name))
        tables[name] = {"version": table.version() if table else None}
    return {**status, "tables": tables}
