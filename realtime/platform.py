"""What a running API process holds: settings, store clients, and the services built on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from httpx_aiohttp import HttpxAiohttpClient
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from chatlake.bus import bootstrap_servers
from chatlake.db import AppPool, open_app_pool
from chatlake.embedded import Endpoints, Services
from chatlake.keyspace import redis_client, redis_sync_client
from chatlake.secrets import secret_box
from chatlake.settings import Settings
from chatlake.tenants import ControlPlane
from realtime.channels.config import ChannelStore
from realtime.channels.delivery import Deliveries, Sender
from realtime.channels.identities import Identities
from realtime.channels.teams import OpenIdKeys
from realtime.engine.breaker import CircuitBreaker
from realtime.engine.conversation import Replies
from realtime.engine.flows.engine import sample_flow
from realtime.engine.flows.registry import FlowRegistry
from realtime.engine.intents import IntentRegistry
from realtime.engine.knowledge import KnowledgeBase
from realtime.engine.model_chain import ModelChainStore
from realtime.gate import FailedAuth, TenantDirectory
from realtime.outbound import url_problem
from realtime.state import ConversationStore


def check_event_bus(settings: Settings) -> None:
    """With Kafka the API is unchanged (its Redis stream is the relay's outbox), but the
    bootstrap servers must be named for the relay and the ingest."""
    if settings.event_bus == "kafka":
        bootstrap_servers(settings)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Platform:
    settings: Settings
    endpoints: Endpoints
    pool: AppPool
    redis: Redis
    store: ConversationStore
    control: ControlPlane
    redis_sync: SyncRedis  # for blocking reads run in a thread (metrics scrapes)
    intents: IntentRegistry
    flows: FlowRegistry
    knowledge: KnowledgeBase
    model_chain: ModelChainStore
    replies: Replies
    channels: ChannelStore
    identities: Identities
    deliveries: Deliveries
    sender: Sender
    teams_keys: OpenIdKeys
    tenant_directory: TenantDirectory  # unknown tenants answered without PostgreSQL
    failed_auth: FailedAuth  # failed authentications per client address
    # what stamps messages and events: the wall clock; the demo seeder (cli/demo.py)
    # replays past days through the same code with it moved back
    clock: Callable[[], datetime] = field(default_factory=lambda: _utc_now)

    @classmethod
    async def open(cls, settings: Settings) -> Platform:
        check_event_bus(settings)
        endpoints = Services(settings).endpoints()
        pool = open_app_pool(endpoints.app_database_url, max_size=settings.db_pool_size)
        await pool.open(wait=False)
        redis = redis_client(endpoints.redis_url)
        control = ControlPlane(pool, redis, sample_flow())
        knowledge = KnowledgeBase(pool)
        # httpx's API over aiohttp's connection pool: httpcore's pool checks every pooled
        # connection on each request, which cost the chain more than half its CPU under load.
        http = HttpxAiohttpClient(limits=httpx.Limits(max_connections=200))
        box = secret_box(settings)
        return cls(
            settings=settings,
            endpoints=endpoints,
            pool=pool,
            redis=redis,
            store=ConversationStore(redis, settings.conversation_ttl_seconds),
            control=control,
            redis_sync=redis_sync_client(endpoints.redis_url),
            intents=IntentRegistry(pool, redis, settings.lake_root),
            flows=FlowRegistry(pool, control),
            knowledge=knowledge,
            model_chain=(chain := ModelChainStore(pool, box)),
            replies=Replies(
                knowledge, chain, http, CircuitBreaker(redis), redis, settings.llm_prices
            ),
            channels=(channels := ChannelStore(pool, box, control)),
            identities=Identities(pool, settings.secret("pseudonym_key")),
            deliveries=Deliveries(redis),
            sender=Sender(http, redis, channels.config),
            # every OpenID document is fetched under the outbound-URL rules of the moment
            teams_keys=OpenIdKeys(http, lambda url: url_problem(url, settings.allow_private_urls)),
            tenant_directory=TenantDirectory(redis, endpoints.database_url),
            failed_auth=FailedAuth(redis),
        )

    async def close(self) -> None:
        await self.sender.drain()
        await self.pool.close()
        await self.redis.aclose()
        await self.replies.http.aclose()
        self.redis_sync.close()
