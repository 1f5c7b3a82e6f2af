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

A consumer name is held by one process at a time (a lease in Redis, renewed while it
runs): two processes under one name would share one app transaction, and the loser of
their commit race would take the winner's version for its own and acknowledge entries
that never reached the lake. A lease left by a killed process on this host is taken over
at once; elsewhere it expires after `LEASE_MS` (chatlake/leases.py).

A running worker survives the lake failing under it as it survives Redis dropping out:
on a Delta or storage error (its log cleaned by erasure or retention, a commit that kept
conflicting) it logs, backs off (at most `MAX_BACKOFF_S`) and recovers, which re-commits
the in-flight batch from its recorded range under its recorded version.
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
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import structlog
from deltalake.exceptions import DeltaError
from redis import ConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from chatlake.keyspace import ingest_inflight, ingest_lease, ingest_stats
from chatlake.leases import Lease, LeaseTaken
from chatlake.streams import GROUP, entry_key, event_streams, stream_status, trim_acknowledged
from lake.schemas import BRONZE_TABLES, CONVERSATION_EVENTS_TABLE, MESSAGES_TABLE
from lake.writer import DeltaAppender, open_table, table_uri

# Every event field of every table, nullable: one parse, then a split by event type.
_ALL_FIELDS: dict[str, pa.Field] = {}
for _event_schema, _ in BRONZE_TABLES.values():
    for _field in _event_schema:
        _ALL_FIELDS.setdefault(_field.name, _field.with_nullable(True))
ANY_EVENT = pa.schema(list(_ALL_FIELDS.values()))
FAILPOINT_ENV = "CHATLAKE_INGEST_FAILPOINT"
MAX_BACKOFF_S = 30.0
_log = structlog.get_logger("chatlake.ingest")

# Delete the consumer from the stream's group only if nothing delivered to it is still
# unacknowledged: DELCONSUMER drops its pending entries, which no one could recover then.
_LEAVE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


class ConsumerBusy(LeaseTaken):
    """Another live process runs this consumer name."""


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-1"


def _failpoint(name: str) -> None:
    """Crash here, as kill -9 would, when the test harness asks for it."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _raw_reply(response: Any, **_: Any) -> Any:
    return response


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
        event_schema, table_schema = BRONZE_TABLES[name]
        subset = parsed.filter(mask)
        if subset.num_rows == 0:
            continue
        subset = subset.select(event_schema.names).cast(event_schema)
        dates = pc.cast(subset.column("created_at"), pa.date32())
        tables[name] = subset.append_column(table_schema.field("date"), dates)
    return tables


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
            low, high = (entry_key(x) for x in ranges.get(stream, ("0-0", "0-0")))
            for item in items:
                inside_range = stream in ranges and low <= entry_key(item[0]) <= high
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
        self.appenders = {name: DeltaAppender(self.lake_root, name) for name in BRONZE_TABLES}
        self.version = self._committed_version()
        self._groups: set[str] = set()
        self._untrimmed: set[str] = set()
        self._last_trim = 0.0
        self.totals = {"batches": 0, "entries": 0, "rows": 0}
        self.lease = Lease(self.redis, ingest_lease(self.consumer))

    # --- the consumer's lease -----------------------------------------------------------

    def claim(self) -> None:
        """Take the consumer's lease (ConsumerBusy if a live process holds it) and keep it
        renewed on a thread until `release`."""
        try:
            self.lease.claim(f"ingest consumer {self.consumer!r}")
        except LeaseTaken as exc:
            raise ConsumerBusy(f"{exc}; give this one another --consumer name") from None

    def release(self) -> None:
        """Give the lease back (a stopped worker's name is free at once)."""
        self.lease.release()

    # --- streams and groups -------------------------------------------------------------

    def streams(self) -> list[str]:
        return event_streams(self.redis, GROUP, self._groups, self.only_streams)

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
        # Another process may have committed under this name while this one did not hold
        # it (`ingest --once`, a reaper): new batches go after its versions, not under them.
        self.version = self._committed_version()
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

    def _committed_version(self) -> int:
        """The last batch version this consumer committed to any table."""
        return max(
            appender.committed_version(self.app_id, refresh=True)
            for appender in self.appenders.values()
        )

    def _prefetched(self, block_ms: int | None, should_stop: Callable[[], bool]) -> Any:
        """Batches read one ahead on a thread, so Redis reads overlap the Delta commits.

        At most two batches are delivered and unacknowledged at a time; `recover` sorts
        them out after a crash (the in-flight one by its recorded range).
        """
        batches: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        failure: list[BaseException] = []
        closed = threading.Event()  # the committing side left (done, or failed)

        def hand_over(item: Batch | None) -> bool:
            while not closed.is_set():
                try:
                    batches.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False  # a batch read but not handed over stays pending: recovered

        def reader() -> None:
            try:
                while not should_stop() and not closed.is_set():
                    batch = self._read(dict.fromkeys(self.streams(), ">"), block_ms)
                    if batch is None and block_ms is None:
                        break
                    if batch is not None and not hand_over(batch):
                        break
            except BaseException as exc:  # handed to the committing thread
                failure.append(exc)
            finally:
                hand_over(None)

        thread = threading.Thread(target=reader, name="ingest-reader", daemon=True)
        thread.start()
        try:
            while (batch := batches.get()) is not None:
                yield batch
        finally:
            # A commit that failed must not leave the reader running: its next read would
            # race the recovery of this consumer's pending entries.
            closed.set()
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
        if self.lease.claimed:  # never commit under a name another process may have used
            try:
                self.lease.check()
            except LeaseTaken:
                raise ConsumerBusy(f"ingest consumer {self.consumer!r} lost its lease") from None
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
            trim_acknowledged(self.redis, stream, GROUP)

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
            try:
                proxy.claim()
            except ConsumerBusy:
                continue  # idle, yet its process is alive (waiting on the lake, say)
            try:
                proxy.recover()
            finally:
                proxy.release()
            reaped.append(name)
        return reaped

    def leave_group(self) -> None:
        """Stop being a consumer of every stream where nothing delivered to this one is
        unacknowledged (`--once` beside a running worker uses a name only once; a group
        would list it forever). Run while the lease is held, so nothing reads under this
        name meanwhile; a later read under it joins the group again."""
        for stream in self.streams():
            try:
                self.redis.eval(_LEAVE, 1, stream, GROUP, self.consumer)
            except ResponseError as exc:  # the stream or group went away: nothing to leave
                if "NOGROUP" not in str(exc):
                    raise

    # --- loops --------------------------------------------------------------------------

    def drain(self) -> list[BatchResult]:
        """Recover, then commit batches until the streams hold nothing new (`--once`), then
        leave the group where this consumer has nothing pending."""
        self.claim()
        try:
            results = self.recover()
            with closing(self._prefetched(None, bool)) as batches:
                results += [self._commit(self._versioned(b)) for b in batches]
            self.trim()
            self.leave_group()
        finally:
            self.release()
        return results

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Recover, then commit batches as they come until `should_stop()`. When Redis
        drops out or the lake fails under a commit, wait, then recover again: what was
        delivered but not committed (a read whose reply was lost included) is in this
        consumer's pending entries, the in-flight batch under its recorded range."""
        last_reap = time.monotonic()
        backoff = 0.5
        try:
            while not should_stop():
                try:
                    if not self.lease.held.is_set():
                        self.claim()
                    self.recover()
                    with closing(self._prefetched(self.max_latency_ms, should_stop)) as batches:
                        for batch in batches:
                            self._commit(self._versioned(batch))
                            backoff = 0.5
                            if time.monotonic() - last_reap > self.reap_after_ms / 2000:
                                self.reap_dead_consumers()
                                last_reap = time.monotonic()
                    self.trim()
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    _log.warning("ingest_redis_unavailable", consumer=self.consumer, error=str(exc))
                    self._pause(1.0, should_stop)
                except ConsumerBusy as exc:  # `ingest --once` has the name for its drain
                    _log.warning("ingest_consumer_busy", consumer=self.consumer, error=str(exc))
                    self._pause(backoff, should_stop)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                except (DeltaError, OSError) as exc:
                    _log.warning(
                        "ingest_lake_error",
                        consumer=self.consumer,
                        error=f"{type(exc).__name__}: {exc}",
                        retry_in_s=backoff,
                    )
                    self._pause(backoff, should_stop)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            self.release()

    @staticmethod
    def _pause(seconds: float, should_stop: Callable[[], bool]) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not should_stop():
            time.sleep(min(0.1, seconds))

    def _versioned(self, batch: Batch) -> Batch:
        batch.version = self.version + 1
        return batch


def drain_once(
    redis: Redis, lake_root: str, consumer: str | None = None, **options: Any
) -> tuple[IngestWorker, list[BatchResult]]:
    """`chatlake ingest --once`: drain under `consumer`, else under the default name (so
    what a stopped default worker left pending is recovered), or, when a live process
    holds that name (the worker of `up`), under a name of its own that it uses once."""
    name = consumer or default_consumer_name()
    worker = IngestWorker(redis, lake_root, consumer=name, **options)
    try:
        return worker, worker.drain()
    except ConsumerBusy:
        if consumer is not None:
            raise
    worker = IngestWorker(redis, lake_root, consumer=f"{name}-once-{os.getpid()}", **options)
    return worker, worker.drain()


def ingest_status(redis: Redis, lake_root: str) -> dict[str, Any]:
    """`stream_status` plus the version of each bronze table (the tables ingest writes)."""
    status = stream_status(redis)
    tables = {}
    for name in BRONZE_TABLES:
        table = open_table(table_uri(lake_root, name))
        tables[name] = {"version": table.version() if table else None}
    return {**status, "tables": tables}
