"""Conversation state and the event log in Redis, read and written in one round trip each.

Two Lua scripts carry the hot path:

* `admit` authenticates the API key against the cached key entry, checks the tenant's
  status, applies the GCRA rate limit of the message's source (the tenant's API keys, a
  channel, a widget visitor and address: each its own budget) and loads the
  conversation, atomically.
* `record` writes the conversation's new state, appends the messages to the conversation,
  indexes it under the user and XADDs one event per message to the tenant's event stream,
  atomically: a reply is returned only after its events are in the stream.

All keys of one call share the tenant's hash tag, so both scripts run unchanged on Redis
Cluster. Data survives a Redis restart through the AOF (fsync every second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatlake.apikeys import ParsedKey
from chatlake.keyspace import TenantKeyspace
from chatlake.pii import subject_digest

# A conversation keeps its last RECENT_MESSAGES messages in Redis; the full history is in
# the lake, the running summary in the conversation's hash (realtime/engine/context.py).
RECENT_MESSAGES = 50

ADMIT = """
-- KEYS: tenant, api key, nlu model, then ARGV[1] rate-limit buckets, then the conversation
-- ARGV[2..]: each bucket's cap per minute (0: the tenant's limit; else the lower of both)
local key_id = redis.call('GET', KEYS[2])
if not key_id then return {'miss'} end
if key_id == '' then return {'unauthorized'} end
local tenant = redis.call('HMGET', KEYS[1], 'status', 'rate_limit', 'routing')
if not tenant[1] or not tenant[3] then return {'miss'} end
if tenant[1] ~= 'active' then return {'suspended'} end
local buckets = tonumber(ARGV[1])
if buckets > 0 then
  -- GCRA per bucket: one message every 60/limit seconds, with a burst of a whole
  -- minute's allowance; the message is taken only if every bucket has room for it
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  local wait = 0
  local tats = {}
  for i = 1, buckets do
    local limit = tonumber(tenant[2])
    local cap = tonumber(ARGV[i + 1])
    if cap > 0 and cap < limit then limit = cap end
    local interval = 60000000 / limit
    local tat = tonumber(redis.call('GET', KEYS[3 + i]) or now)
    if tat < now then tat = now end
    tats[i] = tat + interval
    local allowed_at = tats[i] - 60000000
    if allowed_at - now > wait then wait = allowed_at - now end
  end
  if wait > 0 then
    return {'limited', string.format('%d', math.ceil(wait / 1000000))}
  end
  for i = 1, buckets do
    redis.call('SET', KEYS[3 + i], string.format('%d', tats[i]),
               'PX', math.ceil((tats[i] - now) / 1000) + 1000)
  end
end
local nlu = redis.call('GET', KEYS[3]) or ''
if #KEYS < 4 + buckets then return {'ok', key_id, tenant[3], nlu} end
local conversation = redis.call('HGETALL', KEYS[4 + buckets])
if #conversation == 0 then return {'no_conversation', key_id, tenant[3], nlu} end
return {'ok', key_id, tenant[3], nlu, conversation}
"""

RECORD = """
-- ARGV[1]: JSON {ttl, activity, conversation_id, batch_id, messages, fields}
-- ARGV[2..]: the events; the first `messages` of them are messages of the conversation,
-- the rest (conversation started, ...) go to the event stream only.
local meta = cjson.decode(ARGV[1])
-- The user's erasure is running: nothing of theirs may be written meanwhile.
if redis.call('EXISTS', KEYS[5]) == 1 then return {'erasing'} end
-- A retried call (the reply of the first was lost) must not append the events twice.
if redis.call('HGET', KEYS[1], 'last_batch') == meta.batch_id then return {} end
-- The state this turn was computed from must still be the conversation's: two messages
-- at once (or a handoff release) must not overwrite each other's changes.
local rev = redis.call('HGET', KEYS[1], 'rev') or ''
if rev ~= meta.rev then return {'conflict'} end
meta.fields.last_batch = meta.batch_id
meta.fields.rev = tostring((tonumber(rev) or 0) + 1)
local fields = {}
for name, value in pairs(meta.fields) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[1], unpack(fields))
local ids = {}
for i = 2, #ARGV do
  if i <= meta.messages + 1 then redis.call('RPUSH', KEYS[2], ARGV[i]) end
  ids[#ids + 1] = redis.call('XADD', KEYS[4], '*', 'event', ARGV[i])
end
redis.call('HINCRBY', KEYS[1], 'message_count', meta.messages)
redis.call('LTRIM', KEYS[2], -meta.keep, -1)  -- bounded: older messages live in the lake
redis.call('ZADD', KEYS[3], meta.activity, meta.conversation_id)
redis.call('EXPIRE', KEYS[1], meta.ttl)
redis.call('EXPIRE', KEYS[2], meta.ttl)
redis.call('EXPIRE', KEYS[3], meta.ttl)
return ids
"""


class SubjectErasing(Exception):
    """The user's erasure is running: their message is refused, nothing is written."""


class StateConflict(Exception):
    """The conversation changed between reading its state and writing the new one."""


@dataclass(frozen=True)
class Admission:
    """The outcome of `admit`: `status` is ok, miss, unauthorized, suspended, limited or
    no_conversation."""

    status: str
    key_id: str | None = None
    retry_after: int = 0
    conversation: dict[str, str] | None = None
    routing: dict[str, Any] | None = None  # live flow version and A/B split
    nlu_version: int | None = None


def _decode_hash(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


@dataclass(frozen=True)
class Budget:
    """A rate-limit bucket a message is counted against: its Redis key and its cap per
    minute (0: the tenant's limit; otherwise the lower of the two)."""

    key: str
    cap_per_minute: int = 0


class ConversationStore:
    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self._admit = redis.register_script(ADMIT)
        self._record = redis.register_script(RECORD)

    async def admit(
        self,
        key: ParsedKey,
        *,
        rate_limited: bool,
        conversation_id: str | None = None,
        budgets: list[Budget] | None = None,
    ) -> Admission:
        """Authenticate, rate-limit and load the conversation. A rate-limited message is
        counted against `budgets` (default: the tenant's API budget), all or none."""
        keys = TenantKeyspace(key.tenant_id)
        if not rate_limited:
            budgets = []
        elif budgets is None:
            budgets = [Budget(keys.rate_limit)]
        script_keys = [keys.tenant, keys.api_key(key.digest_hex), keys.nlu_model]
        script_keys += [budget.key for budget in budgets]
        if conversation_id is not None:
            script_keys.append(keys.conversation(conversation_id))
        args = [len(budgets), *(budget.cap_per_minute for budget in budgets)]
        result = await self._call(self._admit, script_keys, args)
        status = result[0].decode()
        if status == "limited":
            return Admission(status, retry_after=max(1, int(result[1])))
        if len(result) < 4:
            return Admission(status)
        return Admission(
            status,
            key_id=result[1].decode(),
            routing=orjson.loads(result[2]),
            nlu_version=int(result[3]) if result[3] else None,
            conversation=_decode_hash(result[4]) if len(result) > 4 else None,
        )

    async def record(
        self,
        tenant_id: str,
        conversation_id: str,
        user_id: str,
        fields: dict[str, str],
        events: list[bytes],
        activity_ms: int,
        batch_id: str,
        other_events: list[bytes] | None = None,
        expected_rev: str = "",
    ) -> list[bytes]:
        """Persist the conversation's new state, add the message `events` (encoded JSON)
        to the conversation and append them, then `other_events`, to the event stream.

        `batch_id` (the inbound message's id) makes a repeated call a no-op;
        `expected_rev` is the conversation's `rev` the turn was computed from (empty for a
        new conversation): if it moved on meanwhile, StateConflict and nothing is written.
        """
        keys = TenantKeyspace(tenant_id)
        # Few, large arguments: the client packs each argument in Python.
        meta = orjson.dumps(
            {
                "ttl": self.ttl_seconds,
                "activity": activity_ms,
                "conversation_id": conversation_id,
                "batch_id": batch_id,
                "rev": expected_rev,
                "messages": len(events),
                "keep": RECENT_MESSAGES,
                "fields": fields,
            }
        )
        script_keys = [
            keys.conversation(conversation_id),
            keys.messages(conversation_id),
            keys.user_conversations(user_id),
            keys.events,
            keys.erasing(subject_digest(tenant_id, user_id)),
        ]
        ids: list[bytes] = await self._call(
            self._record, script_keys, [meta, *events, *(other_events or [])]
        )
        if ids and ids[0] == b"conflict":
            raise StateConflict(conversation_id)
        if ids and ids[0] == b"erasing":
            raise SubjectErasing(user_id)
        return ids

    async def _call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA on a pooled connection, falling back to the client's own path.

        The client's command machinery costs more CPU than the round trip itself; the hot
        path sends its two scripts directly and leaves reconnects, retries and SCRIPT LOAD
        to the client (both scripts are safe to repeat).
        """
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return await conn.read_response()
        except (RedisConnectionError, RedisTimeoutError, NoScriptError):
            await conn.disconnect()
        finally:
            await pool.release(conn)
        return await script(keys=keys, args=args)

    async def release_handoff(self, tenant_id: str, conversation_id: str) -> bool:
        """Give a handed-off conversation back to the bot; False if it was not handed off.

        Optimistic, like a message turn: WATCH, then write the state and bump `rev`, so a
        message in flight retries on the released state instead of undoing the release.
        """
        key = TenantKeyspace(tenant_id).conversation(conversation_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, "flow")
                    state = orjson.loads(raw) if raw else {}
                    if not state.get("handoff"):
                        return False
                    state["handoff"] = False
                    state["state"] = ""  # the next message starts again from the flow's start
                    pipe.multi()
                    pipe.hset(key, "flow", orjson.dumps(state))
                    pipe.hincrby(key, "rev", 1)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    async def conversation(
        self, tenant_id: str, conversation_id: str
    ) -> tuple[dict[str, str], list[dict[str, Any]]] | None:
        keys = TenantKeyspace(tenant_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.conversation(conversation_id))
            pipe.lrange(keys.messages(conversation_id), 0, -1)
            meta, messages = await pipe.execute()
        if not meta:
            return None
        return (
            {k.decode(): v.decode() for k, v in meta.items()},
            [orjson.loads(raw) for raw in messages],
        )

    async def latest_conversation(self, tenant_id: str, user_id: str) -> str | None:
        """The id of the user's most recently active conversation (it may have expired
        since: admission then says `no_conversation`)."""
        index = TenantKeyspace(tenant_id).user_conversations(user_id)
        latest = cast(list[bytes], await self.redis.zrevrange(index, 0, 0))
        return latest[0].decode() if latest else None

    async def user_conversations(
        self, tenant_id: str, user_id: str, limit: int
    ) -> list[dict[str, str]]:
        keys = TenantKeyspace(tenant_id)
        index = keys.user_conversations(user_id)
        raw_ids = cast(list[bytes], await self.redis.zrevrange(index, 0, limit - 1))
        ids = [raw.decode() for raw in raw_ids]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for conversation_id in ids:
                pipe.hgetall(keys.conversation(conversation_id))
            metas = await pipe.execute()
        found = []
        expired = []
        for conversation_id, meta in zip(ids, metas, strict=True):
            if not meta:
                expired.append(conversation_id)
                continue
            found.append(
                {"conversation_id": conversation_id}
                | {k.decode(): v.decode() for k, v in meta.items()}
            )
        if expired:  # the index outlives conversations that expired on their own
            await self.redis.zrem(index, *expired)
        return found
