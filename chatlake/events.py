"""The event contract: what the realtime path appends to the event log, declared once.

`MessageEvent` (one per message, in or out) and `ConversationEvent` (every other event of
a conversation) are the only declaration of the events' fields: the API builds them here,
and the lake derives the Arrow schemas of its bronze tables from these TypedDicts
(lake/schemas.py), field for field and in this order. A field typed `X | None` is
nullable in the lake, any other is not; `created_at` travels as an ISO 8601 string and is
marked `UtcTimestamp`, which the lake stores as a timestamp. `payload` travels as a JSON
string so the row stays flat.

This module imports no lake library (pyarrow, deltalake): the API uses it.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Annotated, Any, Literal, TypedDict

import orjson


class UtcTimestamp:
    """Marks an event field that travels as an ISO 8601 timestamp string (with its
    offset) and that the lake stores as a timestamp in microseconds, UTC."""


def default_user_id(channel: str, sender: str) -> str:
    """The user id of a channel's sender that no identity link names otherwise:
    `<channel>:<id there>` (a Twilio voice caller is the same user as on SMS)."""
    return f"{'twilio' if channel == 'twilio-voice' else channel}:{sender}"


def new_event_id() -> str:
    """128 random bits as 32 hex digits (the shape of a UUID's hex, without its cost)."""
    return os.urandom(16).hex()


class _EventIdentity(TypedDict):
    """Who and where: the first fields of every event, message or not."""

    event_id: str
    event_type: str
    tenant_id: str
    conversation_id: str
    user_id: str
    channel: str


class MessageEvent(_EventIdentity):
    direction: Literal["in", "out"]
    type: str
    text: str | None
    payload: str | None
    language: str | None
    intent: str | None
    confidence: float | None
    tier: str | None
    provider: str | None
    model: str | None
    latency_ms: float | None
    flow_version: int | None
    variant: str | None
    model_version: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    created_at: Annotated[str, UtcTimestamp]


def message_event(
    *,
    tenant_id: str,
    conversation_id: str,
    user_id: str,
    channel: str,
    direction: Literal["in", "out"],
    type: str,
    text: str,
    created_at: datetime,
    payload: dict[str, Any] | None = None,
    language: str | None = None,
    intent: str | None = None,
    confidence: float | None = None,
    tier: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    latency_ms: float | None = None,
    flow_version: int | None = None,
    variant: str | None = None,
    model_version: int | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    cost_usd: float | None = None,
) -> MessageEvent:
    return MessageEvent(
        event_id=new_event_id(),
        event_type="message",
        tenant_id=tenant_id,
        conversation_id=conversation_id,
        user_id=user_id,
        channel=channel,
        direction=direction,
        type=type,
        text=text,
        payload=orjson.dumps(payload).decode() if payload is not None else None,
        language=language,
        intent=intent,
        confidence=confidence,
        tier=tier,
        provider=provider,
        model=model,
        latency_ms=latency_ms,
        flow_version=flow_version,
        variant=variant,
        model_version=model_version,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
        created_at=created_at.isoformat(),
    )


def encode(event: MessageEvent | ConversationEvent) -> bytes:
    return orjson.dumps(event)


class ConversationEvent(_EventIdentity):
    payload: str | None
    created_at: Annotated[str, UtcTimestamp]


def conversation_event(
    event_type: str,
    *,
    tenant_id: str,
    conversation_id: str,
    user_id: str,
    channel: str,
    created_at: datetime,
    payload: dict[str, Any] | None = None,
) -> ConversationEvent:
    """Any event of a conversation that is not a message: started, closed, handoff, …"""
    return ConversationEvent(
        event_id=new_event_id(),
        event_type=event_type,
        tenant_id=tenant_id,
        conversation_id=conversation_id,
        user_id=user_id,
        channel=channel,
        payload=orjson.dumps(payload).decode() if payload is not None else None,
        created_at=created_at.isoformat(),
    )
