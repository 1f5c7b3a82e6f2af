"""The event streams as the lake sees them: the consumer group and its lag.

Redis only (no Arrow, no Delta), so the API can report ingest lag on /metrics without
loading the lake's libraries.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from redis import Redis
from redis.exceptions import ResponseError

from chatlake.keyspace import EVENT_STREAMS, ingest_stats

GROUP = "lake"


def stream_status(redis: Redis) -> dict[str, Any]:
    """Lag and throughput from Redis alone: per stream its length (entries not yet in the
    lake, since only acknowledged ones are trimmed) and pending entries; per consumer its
    last committed batch and rows per second."""
    members: Any = redis.smembers(EVENT_STREAMS)
    per_stream = []
    for stream in sorted(s.decode() for s in members):
        try:
            pending = int(redis.xpending(stream, GROUP)["pending"])
        except ResponseError:  # no group yet: nothing read
            pending = 0
        per_stream.append({"stream": stream, "length": redis.xlen(stream), "pending": pending})
    consumers = [orjson.loads(raw) for raw in redis.hvals(ingest_stats())]
    return {
        "streams": len(per_stream),
        "stream_length": sum(s["length"] for s in per_stream),
        "pending": sum(s["pending"] for s in per_stream),
        "consumers": sorted(consumers, key=lambda c: c["consumer"]),
        "per_stream": per_stream,
    }


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (`<ms>-<seq>`) as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_entry_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def trim_acknowledged(redis: Redis, stream: str, group: str) -> None:
    """Drop from `stream` the entries `group` has delivered and every consumer of it has
    acknowledged (the ingest's group: they are in the lake; the relay's: in Kafka)."""
    # The last delivered id first: anything delivered after this read has a larger id and
    # survives the trim, whether or not XPENDING below saw it.
    groups: Any = redis.xinfo_groups(stream)
    found = next((g for g in groups if g["name"].decode() == group), None)
    if found is None:
        return
    min_id = next_entry_id(found["last-delivered-id"].decode())
    summary: Any = redis.xpending(stream, group)
    if summary["pending"] and entry_key(summary["min"].decode()) < entry_key(min_id):
        min_id = summary["min"].decode()
    redis.xtrim(stream, minid=min_id, approximate=False)


def event_streams(
    redis: Redis, group: str, joined: set[str], only: Collection[str] | None = None
) -> list[str]:
    """Every tenant's event stream (or those in `only`), sorted, with `group` created on
    each from its first entry; `joined` remembers where it exists (updated in place)."""
    members: Any = redis.smembers(EVENT_STREAMS)
    streams = sorted(s.decode() for s in members)
    if only is not None:
        streams = [s for s in streams if s in only]
    for stream in streams:
        if stream not in joined:
            try:
                redis.xgroup_create(stream, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            joined.add(stream)
    return streams
