"""Redis keys: every tenant key is prefixed and hash-tagged by tenant.

`cl:{<tenant_id>}:…` puts all of a tenant's keys in one Redis Cluster slot, so the hot path's
scripts (auth, rate limit, state, event append) touch one slot and stay atomic at scale.
This is the one place that names Redis keys and builds Redis clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
from redis.retry import Retry as SyncRetry

# The set of per-tenant event streams, read by the ingest worker.
EVENT_STREAMS = "cl:event-streams"


def ingest_inflight(consumer: str) -> str:
    """Hash: the batch an ingest consumer is committing (version, entry ids)."""
    return f"cl:ingest:inflight:{consumer}"


def ingest_stats() -> str:
    """Hash: consumer name -> JSON stats of its last batch and totals."""
    return "cl:ingest:stats"


def ingest_lease(consumer: str) -> str:
    """String: `host:pid:token` of the one process that runs an ingest consumer (with a
    TTL, renewed while it runs)."""
    return f"cl:ingest:lease:{consumer}"


def relay_lease(shard: str) -> str:
    """String: the one process relaying a shard of the outboxes to Kafka ("all": every
    tenant's)."""
    return f"cl:relay:lease:{shard}"


def relay_stats(shard: str) -> str:
    """String: JSON of a relay shard's last batch and totals."""
    return f"cl:relay:stats:{shard}"


def kafka_ingest_workers(topic: str) -> str:
    """Sorted set: the Kafka ingest workers of a topic alive (score: when their heartbeat
    expires, ms since the epoch)."""
    return f"cl:kafka-ingest:workers:{topic}"


def kafka_ingest_stats(topic: str) -> str:
    """Hash: Kafka ingest worker name -> JSON stats of its last batch and totals."""
    return f"cl:kafka-ingest:stats:{topic}"


def kafka_partition_lease(topic: str, partition: int) -> str:
    """String: the Kafka ingest worker that owns a partition of the events topic."""
    return f"cl:kafka-ingest:lease:{topic}:{partition}"


# Set: every tenant id (added when a tenant is created). With KNOWN_TENANTS_COMPLETE set
# it is the whole list, and an id not in it is answered without asking PostgreSQL.
KNOWN_TENANTS = "cl:tenants:known"
KNOWN_TENANTS_COMPLETE = "cl:tenants:complete"


def auth_failures(address_digest: str) -> str:
    """String (with a TTL): failed authentications from one client address in a window."""
    return f"cl:auth-failures:{address_digest}"


def login_failures(email_digest: str) -> str:
    """String (with a TTL): failed dashboard sign-ins of one account (by email digest)."""
    return f"cl:login-failures:{email_digest}"


def totp_last_step(user_id: str) -> str:
    """String (with a TTL): the last TOTP time step a dashboards admin signed in with; a
    code of that step or an earlier one is not taken again."""
    return f"cl:totp-last:{user_id}"


@dataclass(frozen=True)
class TenantKeyspace:
    tenant_id: str

    @property
    def prefix(self) -> str:
        return f"cl:{{{self.tenant_id}}}"

    @property
    def tenant(self) -> str:
        """Hash: the tenant's status and rate limit, cached from PostgreSQL."""
        return f"{self.prefix}:tenant"

    def api_key(self, key_hash_hex: str) -> str:
        """String: the key id of a live API key (empty for a known-bad key), cached."""
        return f"{self.prefix}:apikey:{key_hash_hex}"

    @property
    def rate_limit(self) -> str:
        """String: the GCRA theoretical arrival time of the tenant's next message (sent
        with one of its API keys)."""
        return f"{self.prefix}:rl"

    def source_rate_limit(self, source: str) -> str:
        """String: the GCRA budget of one source of messages (a channel's webhooks, a web
        widget visitor, a client address): each source drains its own, never another's."""
        return f"{self.prefix}:rl:{source}"

    @property
    def channel_inbox(self) -> str:
        """Stream: channel messages taken over their source's budget (acknowledged to the
        provider), answered later by the recovery loop."""
        return f"{self.prefix}:chan:inbox"

    def channel_inbox_lock(self, entry_id: str) -> str:
        """String: which process is answering a deferred channel message."""
        return f"{self.prefix}:chan:inbox-lock:{entry_id}"

    def conversation(self, conversation_id: str) -> str:
        """Hash: a conversation's metadata and engine state."""
        return f"{self.prefix}:conv:{conversation_id}"

    def messages(self, conversation_id: str) -> str:
        """List: a conversation's messages (JSON events), oldest first."""
        return f"{self.prefix}:conv:{conversation_id}:msgs"

    def user_conversations(self, user_id: str) -> str:
        """Sorted set: a user's conversation ids scored by last activity."""
        return f"{self.prefix}:user:{user_id}:convs"

    @property
    def nlu_model(self) -> str:
        """String: the tenant's active intent model version."""
        return f"{self.prefix}:nlu:active"

    def breaker(self, tier: str) -> str:
        """Hash: a provider tier's circuit breaker (failures, opened_at)."""
        return f"{self.prefix}:breaker:{tier}"

    def erasing(self, subject_digest: str) -> str:
        """Set while the subject's erasure runs (pipelines/compliance/erasure.py)."""
        return f"{self.prefix}:erasing:{subject_digest}"

    @property
    def subject_keys(self) -> str:
        """Hash: user_key -> the key that seals that subject's free text kept in stores
        that cannot be scrubbed byte by byte (chatlake/subject_keys.py)."""
        return f"{self.prefix}:subject-keys"

    @property
    def bus_keys(self) -> str:
        """Hash: user_key -> the key that seals that subject's events on the Kafka bus
        (chatlake/bus.py); apart from `subject_keys`, which the review queue's rebuild
        prunes, because a record in Kafka may still wait for the ingest."""
        return f"{self.prefix}:bus-keys"

    def erasure_key(self, request_id: str) -> str:
        """String: the key that opens an erasure request's sealed subject (destroyed when
        the erasure completes, so the sealed copy a job runner keeps is unreadable)."""
        return f"{self.prefix}:erasure-key:{request_id}"

    def llm_cache(self, digest: str) -> str:
        """String: a provider's answer to a prompt, by the prompt's digest."""
        return f"{self.prefix}:llmcache:{digest}"

    def channel_delivery(self, channel: str, message_id_digest: str) -> str:
        """String: a channel delivery (the provider's message id, hashed) being handled
        (`processing`) or handled (`done`); a provider's retry of it is not handled again."""
        return f"{self.prefix}:chan:{channel}:seen:{message_id_digest}"

    @property
    def channel_outbox(self) -> str:
        """Stream: replies rendered for a channel and not yet delivered or dead-lettered;
        an entry left by a process that stopped is sent again by another."""
        return f"{self.prefix}:chan:outbox"

    def channel_outbox_lock(self, entry_id: str) -> str:
        """String: which process is sending an outbox entry (expires if it dies)."""
        return f"{self.prefix}:chan:outbox-lock:{entry_id}"

    @property
    def channel_dead_letters(self) -> str:
        """Stream: replies a channel's API would not take after every retry."""
        return f"{self.prefix}:chan:dead"

    @property
    def events(self) -> str:
        """Stream: every message and conversation event of the tenant, in order."""
        return f"{self.prefix}:events"


def redis_client(url: str, max_connections: int = 512) -> Redis:
    """An async Redis client for a server that may restart (AOF reload included).

    One connection per request in flight; `max_connections` bounds them, past it a command
    fails fast (the API answers 503) rather than queueing without limit.
    """
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=8)
    return Redis.from_url(
        url,
        max_connections=max_connections,
        retry=retry,
        retry_on_error=[ConnectionError, TimeoutError, BusyLoadingError],
        health_check_interval=30,
    )


def redis_sync_client(url: str) -> SyncRedis:
    """A blocking client, for the workers and the CLI (same retries as the async one)."""
    return SyncRedis.from_url(
        url,
        retry=SyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=8),
        retry_on_error=[ConnectionError, TimeoutError, BusyLoadingError],
        health_check_interval=30,
    )
