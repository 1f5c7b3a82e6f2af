"""One user message through the engine: first understood (`understand`: entities, the
language, the intent by the tenant's intent model), then answered (`answer`: by the
tenant's flow or, for a tenant without one, the reply chain alone). `turn.py` runs both
for each message, then records and returns what they gave.

This is where the reply chain plugs in: a flow step with `reply_chain`, and any message no
transition takes, is answered by the chain: the tenant's LLM tiers in order (any of the
providers in `providers.py`), then the knowledge tier (the tenant's documents, when one
scores above the threshold), then the rules as the last resort.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import structlog
from redis.asyncio import Redis

from chatlake.keyspace import TenantKeyspace
from nlu.entities import extract_entities
from nlu.language import detect_language
from realtime.engine.breaker import CircuitBreaker
from realtime.engine.flows.engine import FlowState, Message, run_step
from realtime.engine.flows.registry import FlowRegistry, choose_version
from realtime.engine.intents import IntentRegistry
from realtime.engine.knowledge import KnowledgeBase
from realtime.engine.model_chain import ModelChainStore
from realtime.engine.providers import Endpoint, ProviderError, complete
from realtime.engine.rules import TEXTUAL_TYPES, rule_reply


@dataclass(frozen=True)
class Understanding:
    """What the engine made of a message before answering it."""

    intent: str | None
    confidence: float | None
    language: str | None  # the message's, or detected when the intent model ran
    entities: list[dict[str, Any]]
    model_version: int | None  # the tenant's intent model that read it (None: none live)


@dataclass
class Answer:
    texts: Sequence[str | dict[str, Any]]  # texts, and rich replies from the flow
    handoff: bool
    tier: str
    flow_state: str | None = None  # the conversation's new FlowState, as JSON
    flow_version: int | None = None
    variant: str | None = None
    handoff_started: bool = False
    provider: str | None = None
    model: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    usage: ChainReply | None = None  # tokens and cost when an LLM tier answered


_CHAIN = "\x00reply-chain\x00"  # where the chain's answer goes among the flow's texts


@dataclass
class Replies:
    """Where the reply chain plugs in: the tenant's LLM tiers, then knowledge, then rules."""

    knowledge: KnowledgeBase
    chain: ModelChainStore
    http: httpx.AsyncClient
    breaker: CircuitBreaker
    redis: Redis
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)  # USD per 1M tokens


CACHE_SECONDS = 3600  # identical prompts to the same tier are answered from Redis
SYSTEM_PROMPT = (
    "You are the customer assistant of this business. Answer in the user's language, "
    "briefly and only from what you know; if unsure, say so."
)
_log = structlog.get_logger("chatlake.replies")


@dataclass
class ChainReply:
    texts: list[str]
    tier: str
    provider: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None


def _cost(
    prices: dict[str, tuple[float, float]], model: str, prompt: int, completion: int
) -> float | None:
    """USD for one call, from per-million-token prices in configuration (None: unpriced)."""
    if model not in prices:
        return None
    per_prompt, per_completion = prices[model]
    return round((prompt * per_prompt + completion * per_completion) / 1_000_000, 8)


async def _reply_chain(
    replies: Replies, tenant_id: str, text: str, message_type: str, context: list[str]
) -> ChainReply:
    """The chain's answer, and the tier (provider, model, tokens, cost) that gave it."""
    if message_type in TEXTUAL_TYPES and text.strip():
        for tier in await replies.chain.tiers_with_keys(tenant_id):
            name = f"{tier['provider']}:{tier['model']}"
            if not await replies.breaker.allow(tenant_id, name):
                continue  # open: skip the tier without waiting for it
            messages = [{"role": "system", "content": SYSTEM_PROMPT}]
            messages += [{"role": "user", "content": earlier} for earlier in context[-4:]]
            messages.append({"role": "user", "content": text})
            cache_key = TenantKeyspace(tenant_id).llm_cache(
                hashlib.sha256(orjson.dumps([name, tier.get("base_url"), messages])).hexdigest()
            )
            cached = await replies.redis.get(cache_key)
            if cached is not None:  # the same prompt to the same tier: its answer again
                text_out = cached.decode() if isinstance(cached, bytes) else str(cached)
                return ChainReply([text_out], "llm", tier["provider"], tier["model"], 0, 0, 0.0)
            try:
                endpoint = Endpoint(
                    tier["provider"], tier["model"], tier.get("base_url"), tier.get("api_key"),
                    tier.get("api_version"), tier.get("timeout_s") or 10.0,
                )  # fmt: skip
                completion = await complete(
                    replies.http, endpoint, messages, stream=bool(tier.get("stream"))
                )
            except ProviderError as exc:
                _log.warning("provider_failed", provider=tier["provider"], error=str(exc))
                await replies.breaker.failed(tenant_id, name)
                continue
            await replies.breaker.succeeded(tenant_id, name)
            await replies.redis.set(cache_key, completion.text, ex=CACHE_SECONDS)
            prompt, produced = completion.prompt_tokens or 0, completion.completion_tokens or 0
            return ChainReply(
                [completion.text], "llm", tier["provider"], tier["model"],
                completion.prompt_tokens, completion.completion_tokens,
                _cost(replies.prices, tier["model"], prompt, produced),
            )  # fmt: skip
        found = await replies.knowledge.answer(tenant_id, text)
        if found is not None:
            return ChainReply([found["text"]], "knowledge")
    return ChainReply(rule_reply(text, message_type).texts, "rules")


async def understand(
    intents: IntentRegistry,
    *,
    tenant_id: str,
    text: str,
    message_type: str,
    language: str | None,
    nlu_version: int | None,
) -> Understanding:
    """The message's entities (the built-in ones and the tenant's), and, for a text when
    the tenant has an intent model live (`nlu_version`), its language and intent."""
    intent = confidence = None
    model = await intents.model(tenant_id, nlu_version) if nlu_version is not None else None
    entities = extract_entities(text, model.entities if model else ()) if text else []
    if model is not None and message_type in TEXTUAL_TYPES and text.strip():
        language = language or detect_language(text, model.default_language)
        prediction = model.classifier_for(language).predict(text)
        if prediction.intent is not None:
            intent, confidence = prediction.intent.name, prediction.intent.confidence
    return Understanding(intent, confidence, language, entities, nlu_version)


async def answer(
    flows: FlowRegistry,
    replies: Replies,
    understood: Understanding,
    *,
    tenant_id: str,
    user_id: str,
    text: str,
    message_type: str,
    routing: dict[str, Any] | None,
    flow_state: str | None,
    context: list[str] | None = None,
) -> Answer:
    """The replies: the step of the flow the conversation is in (or, with none, of the
    version `routing` picks for this user), the reply chain where the flow asks for it;
    without a published flow, the reply chain alone."""

    def reply_chain(message: Message) -> list[str]:
        return [_CHAIN]  # answered after the step: the chain's tiers are async

    state = FlowState.loads(flow_state) if flow_state else None
    version: int | None
    if state is not None:
        version, variant = state.version, state.variant
    else:
        version, variant = choose_version(routing or {}, tenant_id, user_id)
    if version is None:  # no flow published: the reply chain answers alone
        chained = await _reply_chain(replies, tenant_id, text, message_type, context or [])
        return Answer(
            texts=chained.texts,
            handoff=False,
            tier=chained.tier,
            provider=chained.provider,
            model=chained.model,
            usage=chained,
        )
    flow = await flows.document(tenant_id, version)
    was_handed_off = state.handoff if state else False
    message = Message(text, understood.intent, understood.confidence, understood.entities)
    step = run_step(flow, state, version, variant, message, reply_chain)
    texts = step.texts
    via_chain: ChainReply | None = None
    if step.used_reply_chain:
        via_chain = await _reply_chain(replies, tenant_id, text, message_type, context or [])
        answer_texts: list[str | dict[str, Any]] = list(via_chain.texts)
        texts = [piece for t in texts for piece in (answer_texts if t == _CHAIN else [t])]
    return Answer(
        texts=texts,
        handoff=step.handoff,
        tier=via_chain.tier if via_chain else "flow",
        flow_state=step.state.dumps(),
        flow_version=version,
        variant=variant,
        handoff_started=step.handoff and not was_handed_off,
        slots=step.state.slots,
        provider=via_chain.provider if via_chain else None,
        model=via_chain.model if via_chain else None,
        usage=via_chain,
    )
