"""The event streams as the lake sees them: the consumer group and its lag.

Redis only (no Arrow, no Delta), so the API can report ingest lag on /metrics without
loading the lake's libraries.
"""

from __future__ import annotations

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
