"""Deliveries both ways: each provider message handled once, each reply sent with the
channel's rate limit and retries, and a dead-letter record for what could not be sent.

Inbound, `claim` marks the provider's message id in Redis (`processing`, then `done` with
a TTL): a provider's retry of a message already handled is acknowledged and skipped; one
that arrives while the first is still being handled is asked to come back (503), so a
failure of the first loses nothing.

Outbound, replies are sent after the webhook is answered (providers want a quick 200), in
order, one task per inbound message: a per-tenant-and-channel token bucket paces the
requests; 429s, 5xx, throttling codes and network errors are retried with exponential
backoff (or the provider's Retry-After); what is still refused goes to the tenant's
dead-letter stream with the error (`GET /v1/channels/{channel}/dead-letters`).

Over budget, an inbound message is not refused (Twilio does not retry; others give up
after a while): it is kept in the tenant's channel inbox (`defer`), and the recovery loop
answers it once its channel's budget allows (dispatch.py: `answer_deferred`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import httpx
import orjson
from aiolimiter import AsyncLimiter
from redis.asyncio import Redis

from chatlake.keyspace import TenantKeyspace
from realtime.channels import messenger, slack, teams, twilio, whatsapp
from realtime.channels.base import Call, Outcome
from realtime.channels.config import ChannelConfig, config_channel
from realtime.channels.model import Inbound
from realtime.engine.replies import Rendered
from realtime.observability import CHANNEL_SENDS

log = logging.getLogger(__name__)

SEND_MODULES: dict[str, ModuleType] = {
    "whatsapp": whatsapp,
    "messenger": messenger,
    "slack": slack,
    "teams": teams,
    "twilio": twilio,
}
SEEN_SECONDS = 7 * 24 * 3600  # providers retry for hours (Meta up to 36 h); a week covers it
# a crashed handler's claim expires, so the provider's retry is handled; longer than any
# turn (the model chain's tiers time out well before)
PROCESSING_SECONDS = 300
DEAD_LETTERS_KEPT = 10_000
DEFAULT_RATE_PER_S = 20.0
OUTBOX_STALE_S = 60.0  # an outbox entry this old whose lock is gone is sent again
RECOVER_EVERY_S = 30.0
LOCK_SECONDS = 300  # longer than all the attempts of all of an entry's replies take


class Deliveries:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def _key(tenant_id: str, channel: str, message_id: str) -> str:
        digest = hashlib.sha256(message_id.encode()).hexdigest()[:32]
        return TenantKeyspace(tenant_id).channel_delivery(channel, digest)

    async def claim(self, tenant_id: str, channel: str, message_id: str) -> str:
        """`new` (handle it), `done` (handled before) or `busy` (being handled)."""
        key = self._key(tenant_id, channel, message_id)
        if await self.redis.set(key, "processing", nx=True, ex=PROCESSING_SECONDS):
            return "new"
        state = await self.redis.get(key)
        return "done" if state == b"done" else "busy"

    async def done(self, tenant_id: str, channel: str, message_id: str) -> None:
        await self.redis.set(self._key(tenant_id, channel, message_id), "done", ex=SEEN_SECONDS)

    async def release(self, tenant_id: str, channel: str, message_id: str) -> None:
        """Handling failed: the provider's retry must be handled."""
        await self.redis.delete(self._key(tenant_id, channel, message_id))

    async def defer(self, tenant_id: str, record: dict[str, Any]) -> None:
        """Keep an inbound message (`inbound_record`) to be answered later."""
        await self.redis.xadd(
            TenantKeyspace(tenant_id).channel_inbox, {"event": orjson.dumps(record)}
        )

    async def deferred(
        self, batch: int = 100
    ) -> AsyncIterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
        """Each tenant with kept messages, and its oldest ones."""
        async for tenant_id, entries in _kept(self.redis, "chan:inbox", "+", batch):
            yield tenant_id, entries

    async def take_deferred(self, tenant_id: str, entry_id: str) -> bool:
        """Whether this process may answer the kept message (no other is at it)."""
        lock = TenantKeyspace(tenant_id).channel_inbox_lock(entry_id)
        return bool(await self.redis.set(lock, "answering", nx=True, ex=PROCESSING_SECONDS))

    async def release_deferred(self, tenant_id: str, entry_id: str) -> None:
        await self.redis.delete(TenantKeyspace(tenant_id).channel_inbox_lock(entry_id))

    async def finish_deferred(self, tenant_id: str, entry_id: str) -> None:
        keys = TenantKeyspace(tenant_id)
        await _remove(self.redis, keys.channel_inbox, keys.channel_inbox_lock(entry_id), entry_id)


async def _kept(
    redis: Redis, stream_suffix: str, newest: str, batch: int
) -> AsyncIterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """Each tenant's stream named `cl:{tenant}:<stream_suffix>` (the outbox, the inbox)
    with entries up to `newest`: its tenant and its oldest `batch` entries, decoded."""
    async for raw_key in redis.scan_iter(match=f"cl:{{*}}:{stream_suffix}", count=1000):
        stream = _text(raw_key)
        tenant_id = stream.split("{", 1)[1].split("}", 1)[0]
        entries: Any = await redis.xrange(stream, "-", newest, count=batch)
        if entries:
            yield tenant_id, [(_text(i), orjson.loads(f[b"event"])) for i, f in entries]


async def _remove(redis: Redis, stream: str, lock: str, entry_id: str) -> None:
    """An entry done with leaves its stream, and its lock goes with it."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xdel(stream, entry_id)
        pipe.delete(lock)
        await pipe.execute()


def inbound_record(channel: str, inbound: Inbound, user_id: str) -> dict[str, Any]:
    """A kept message: `Inbound(**record["inbound"])` gives it back; `user_id` lets the
    subject's erasure find it (pipelines/compliance/erasure.py)."""
    return {"channel": channel, "inbound": asdict(inbound), "user_id": user_id}


@dataclass
class Outgoing:
    """The replies to one inbound message, rendered, and whom they are for."""

    config: ChannelConfig
    channel: str
    address: dict[str, Any]
    rendered: list[Rendered]
    user_id: str
    conversation_id: str


ConfigLoader = Callable[[str, str], Awaitable[ChannelConfig | None]]


class Sender:
    """Sends replies through the outbox: each inbound message's replies are one entry of
    the tenant's outbox stream, written before the webhook is answered, deleted once
    every reply was delivered or dead-lettered. A process that stops (or dies) leaves its
    entries there; `recover` (every RECOVER_EVERY_S, in every API process) sends the ones
    older than OUTBOX_STALE_S that no live process holds the lock of: at least once, so a
    reply delivered just before a crash may be delivered again."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        redis: Redis,
        configs: ConfigLoader,
        *,
        attempts: int = 5,
        backoff_s: float = 0.25,
        max_wait_s: float = 30.0,
    ) -> None:
        self.http = http
        self.redis = redis
        self.configs = configs
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.teams_tokens = teams.Tokens(http)
        self._limiters: dict[tuple[str, str], tuple[float, AsyncLimiter]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._recovery: asyncio.Task[None] | None = None
        # answers the inbound messages kept over budget (set by the app: it needs the
        # engine); each recovery round calls it
        self.answer_deferred: Callable[[], Awaitable[int]] | None = None

    async def dispatch(self, outgoing: Outgoing) -> None:
        """Record the replies in the outbox (durable before the webhook is answered), then
        send them in the background, in order."""
        bodies = [body for rendered in outgoing.rendered for body in rendered.bodies]
        if not bodies:
            return
        keys = TenantKeyspace(outgoing.config.tenant_id)
        record = {"channel": outgoing.channel, "config_channel": outgoing.config.channel,
                  "address": outgoing.address, "bodies": bodies, "user_id": outgoing.user_id,
                  "conversation_id": outgoing.conversation_id}  # fmt: skip
        entry_id = _text(
            await self.redis.xadd(keys.channel_outbox, {"event": orjson.dumps(record)})
        )
        await self.redis.set(keys.channel_outbox_lock(entry_id), "sending", ex=LOCK_SECONDS)
        self._start(outgoing, bodies, entry_id)

    def _start(self, outgoing: Outgoing, bodies: list[Any], entry_id: str) -> None:
        task = asyncio.create_task(self.send_all(outgoing, bodies, entry_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Let the sends under way finish (on shutdown); what is still unsent after
        `timeout_s` stays in the outbox for another process to send."""
        if self._recovery is not None:
            self._recovery.cancel()
        if not self._tasks:
            return
        _, unfinished = await asyncio.wait(list(self._tasks), timeout=timeout_s)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=5)

    def start_recovery(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(RECOVER_EVERY_S)
                try:
                    await self.recover()
                except Exception:  # the stores may be away for a while: try again later
                    log.warning("outbox recovery failed", exc_info=True)

        self._recovery = asyncio.create_task(loop())

    async def recover(self, stale_s: float = OUTBOX_STALE_S) -> int:
        """Send the outbox entries older than `stale_s` that no process holds, and answer
        the inbound messages kept over budget that fit the budget now; how many outbox
        entries were taken."""
        if self.answer_deferred is not None:
            try:
                await self.answer_deferred()
            except Exception:  # the replies already made must go out all the same
                log.warning("answering deferred channel messages failed", exc_info=True)
        cutoff = int((time.time() - stale_s) * 1000)
        taken = 0
        async for tenant_id, entries in _kept(self.redis, "chan:outbox", str(cutoff), 100):
            keys = TenantKeyspace(tenant_id)
            for entry_id, record in entries:
                lock = keys.channel_outbox_lock(entry_id)
                if not await self.redis.set(lock, "recovering", nx=True, ex=LOCK_SECONDS):
                    continue  # a live process is sending it
                config = await self.configs(tenant_id, record["config_channel"])
                outgoing = Outgoing(
                    config or ChannelConfig(tenant_id, record["config_channel"], False, {}),
                    record["channel"], record["address"], [], record["user_id"],
                    record["conversation_id"],
                )  # fmt: skip
                if config is None or not config.enabled:
                    for body in record["bodies"]:
                        await self._dead_letter(outgoing, body, "the channel is no longer "
                                                "configured or enabled", 0)  # fmt: skip
                    await self._finish(tenant_id, entry_id)
                    continue
                self._start(outgoing, record["bodies"], entry_id)
                taken += 1
        return taken

    async def _finish(self, tenant_id: str, entry_id: str) -> None:
        keys = TenantKeyspace(tenant_id)
        await _remove(self.redis, keys.channel_outbox, keys.channel_outbox_lock(entry_id), entry_id)

    def _limiter(self, config: ChannelConfig) -> AsyncLimiter:
        rate = float(config.options.get("rate_limit_per_s") or DEFAULT_RATE_PER_S)
        key = (config.tenant_id, config.channel)
        current = self._limiters.get(key)
        if current is None or current[0] != rate:
            # a bucket of one second's sends: bursts up to the rate, then paced
            current = (
                rate,
                AsyncLimiter(max(rate, 1.0), 1.0) if rate >= 1 else AsyncLimiter(1, 1.0 / rate),
            )
            self._limiters[key] = current
        return current[1]

    async def send_all(self, outgoing: Outgoing, bodies: list[Any], entry_id: str) -> None:
        tenant_id = outgoing.config.tenant_id
        try:
            for body in bodies:
                try:
                    await self.send(outgoing, body)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug must not kill the task silently
                    log.exception("channel send failed", extra={"channel": outgoing.channel})
                    await self._dead_letter(outgoing, body, "internal error", 0)
        except asyncio.CancelledError:
            # stopped before every reply went: the entry stays in the outbox, unlocked, for
            # another process's recovery
            await self.redis.delete(TenantKeyspace(tenant_id).channel_outbox_lock(entry_id))
            raise
        await self._finish(tenant_id, entry_id)

    async def send(self, outgoing: Outgoing, body: Any) -> bool:
        """One body to the channel's API; True once delivered, False once dead-lettered."""
        module = SEND_MODULES[outgoing.config.channel]
        limiter = self._limiter(outgoing.config)
        result = Outcome(False, error="not attempted")
        for attempt in range(1, self.attempts + 1):
            async with limiter:
                result = await self._attempt(module, outgoing, body)
            if result.delivered:
                CHANNEL_SENDS.labels(outgoing.channel, "sent").inc()
                return True
            if not result.retry or attempt == self.attempts:
                break
            CHANNEL_SENDS.labels(outgoing.channel, "retried").inc()
            wait = result.retry_after_s
            if wait is None:
                wait = self.backoff_s * 2 ** (attempt - 1)
            await asyncio.sleep(min(wait, self.max_wait_s))
        await self._dead_letter(outgoing, body, result.error or "refused", attempt)
        return False

    async def _attempt(self, module: ModuleType, outgoing: Outgoing, body: Any) -> Outcome:
        config = outgoing.config
        try:
            if module is teams:
                token = await self.teams_tokens.token(config)
                request: Call = teams.call(config, outgoing.address, body, token)
            else:
                request = module.call(config, outgoing.address, body)
            response = await self.http.request(
                request.method,
                request.url,
                headers=request.headers,
                json=request.json,
                data=request.data,
                auth=request.auth,
                timeout=15.0,
            )
        except httpx.HTTPStatusError as exc:  # the token endpoint refused
            return Outcome(
                False,
                retry=exc.response.status_code >= 500 or exc.response.status_code == 429,
                error=f"token request: HTTP {exc.response.status_code}",
            )
        except (httpx.TransportError, OSError) as exc:
            return Outcome(False, retry=True, error=f"{type(exc).__name__}: {exc}")
        result: Outcome = module.outcome(response)
        if module is teams and response.status_code == 401:
            self.teams_tokens.forget(config)
            return Outcome(False, retry=True, error=result.error)
        return result

    async def _dead_letter(self, outgoing: Outgoing, body: Any, error: str, attempts: int) -> None:
        CHANNEL_SENDS.labels(outgoing.channel, "dead_letter").inc()
        record = {
            "channel": outgoing.channel,
            "user_id": outgoing.user_id,
            "conversation_id": outgoing.conversation_id,
            "address": outgoing.address,
            "body": body,
            "error": error,
            "attempts": attempts,
            "at": datetime.now(UTC).isoformat(),
        }
        await self.redis.xadd(
            TenantKeyspace(outgoing.config.tenant_id).channel_dead_letters,
            {"event": orjson.dumps(record)},
            maxlen=DEAD_LETTERS_KEPT,
            approximate=True,
        )
        log.warning(
            "channel reply dead-lettered", extra={"channel": outgoing.channel, "error": error}
        )


async def dead_letters(
    redis: Redis, tenant_id: str, channel: str, limit: int
) -> list[dict[str, Any]]:
    """The tenant's dead letters of `channel`, newest first."""
    entries = await redis.xrevrange(
        TenantKeyspace(tenant_id).channel_dead_letters, count=DEAD_LETTERS_KEPT
    )
    found = []
    for entry_id, fields in entries or []:
        record = orjson.loads(fields[b"event"])  # type: ignore[index]
        if config_channel(record["channel"]) == channel:
            found.append({"dead_letter_id": _text(entry_id), **record})
            if len(found) >= limit:
                break
    return found


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
