"""Per-subject keys (crypto-shredding) for end users' free text in PostgreSQL.

PostgreSQL cannot be scrubbed byte by byte: a deleted row lives on in dead tuples until
vacuum reuses the space, and in WAL segments until they are recycled (and in any base
backup). So the one kind of row that holds an end user's words there, the review queue's
utterances, is stored sealed (Fernet) under a key of that subject's own. The keys live in
a Redis hash per tenant, keyed by the subject's pseudonym (`user_key`): erasure deletes the
key and rewrites Redis's append-only file, after which every copy PostgreSQL still keeps
is unreadable. Losing Redis loses the keys: the review queue is rebuilt from silver by the
next pipeline run, so nothing else depends on them.
"""

from __future__ import annotations

import time
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from redis import Redis

from chatlake.keyspace import TenantKeyspace


def seal_texts(
    redis: Redis, tenant_id: str, items: list[tuple[str, str]], bus: bool = False
) -> list[bytes]:
    """Seal each (user_key, text) under its subject's key, creating keys as needed (`bus`:
    the keys of events on the Kafka bus)."""
    keyspace = TenantKeyspace(tenant_id)
    hash_name = keyspace.bus_keys if bus else keyspace.subject_keys
    subjects = sorted({user_key for user_key, _ in items})
    keys: dict[str, bytes] = {}
    if subjects:
        found: Any = redis.hmget(hash_name, subjects)
        for subject, key in zip(subjects, found, strict=True):
            if key is None:
                redis.hsetnx(hash_name, subject, Fernet.generate_key())
                key = redis.hget(hash_name, subject)  # a concurrent writer's key wins
            keys[subject] = key
    return [Fernet(keys[user_key]).encrypt(text.encode()) for user_key, text in items]


def open_texts(
    redis: Redis, tenant_id: str, items: list[tuple[str, bytes]], bus: bool = False
) -> list[str | None]:
    """Open each (user_key, sealed); None where the subject's key is gone (erased)."""
    keyspace = TenantKeyspace(tenant_id)
    hash_name = keyspace.bus_keys if bus else keyspace.subject_keys
    subjects = sorted({user_key for user_key, _ in items})
    found: Any = redis.hmget(hash_name, subjects) if subjects else []
    keys = dict(zip(subjects, found, strict=True))
    opened: list[str | None] = []
    for user_key, sealed in items:
        key = keys.get(user_key)
        try:
            opened.append(Fernet(key).decrypt(bytes(sealed)).decode() if key else None)
        except InvalidToken:
            opened.append(None)
    return opened


def prune_subject_keys(redis: Redis, tenant_id: str, keep: set[str]) -> int:
    """Destroy the keys of subjects with no sealed text left (the review queue was rebuilt
    without them, or retention took their items): copies PostgreSQL still keeps become
    unreadable, as after an erasure. The caller rewrites the append-only file."""
    hash_name = TenantKeyspace(tenant_id).subject_keys
    found: Any = redis.hkeys(hash_name)
    stale = [k for k in found if (k.decode() if isinstance(k, bytes) else k) not in keep]
    return int(redis.hdel(hash_name, *stale)) if stale else 0


def destroy_subject_key(redis: Redis, tenant_id: str, user_key: str) -> bool:
    """Forget the subject's keys, the review queue's and the bus's (the caller rewrites the
    append-only file)."""
    keyspace = TenantKeyspace(tenant_id)
    destroyed = [redis.hdel(name, user_key) for name in (keyspace.subject_keys, keyspace.bus_keys)]
    return any(destroyed)


def subject_key_exists(redis: Redis, tenant_id: str, user_key: str) -> bool:
    keyspace = TenantKeyspace(tenant_id)
    return any(redis.hexists(name, user_key) for name in (keyspace.subject_keys, keyspace.bus_keys))


def rewrite_aof(redis: Redis, timeout_s: float = 120.0) -> None:
    """BGREWRITEAOF, waiting for it (and for one already running) to finish."""
    deadline = time.monotonic() + timeout_s
    while redis.info("persistence")["aof_rewrite_in_progress"]:
        if time.monotonic() > deadline:
            raise TimeoutError("an append-only file rewrite did not finish")
        time.sleep(0.05)
    started = redis.info("persistence").get("aof_last_rewrite_time_sec")
    redis.bgrewriteaof()
    while True:
        info = redis.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info.get("aof_rewrite_scheduled"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the append-only file rewrite did not finish")
        time.sleep(0.05)
    if info.get("aof_last_bgrewrite_status") != "ok":
        raise RuntimeError(f"the append-only file rewrite failed (before: {started})")
