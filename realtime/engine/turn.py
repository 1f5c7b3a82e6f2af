"""The conversation turn: one end-user message, understood, answered, recorded, responded to.

`converse` takes a message from its admission to the response. The conversation admission
loaded must exist and be this user's; then `take_turn` runs, in four steps:

1. understand: the message's entities, language and intent (`conversation.understand`);
2. answer: the step of the tenant's flow, or the reply chain (`conversation.answer`), the
   replies as rich replies (`replies.py`) rendered for the channel when one asks;
3. record: the message and its replies as events (chatlake/events.py, with the
   renderer's degradations), the conversation's new state and summary, in one atomic
   script (realtime/state.py): a reply is returned only after its events are in the
   stream, and a conversation another message changed meanwhile is not overwritten
   (StateConflict: `converse` admits again and redoes the turn on the new state);
4. respond: the API's answer (`MessageOut` of the HTTP contract) and the rendered replies.

Nothing here knows HTTP or the channels: the caller admits the message (authentication
and rate limits: realtime/auth.py), passes a channel's renderer, and turns the refusals
raised here (`TurnRefused`, and the store's `SubjectErasing`) into its own answers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from chatlake.events import (
    MessageEvent,
    conversation_event,
    encode,
    message_event,
    new_event_id,
)
from realtime.engine.context import update_summary
from realtime.engine.conversation import Answer, Replies, Understanding, answer, understand
from realtime.engine.flows.registry import FlowRegistry
from realtime.engine.intents import IntentRegistry
from realtime.engine.replies import Render, Rendered, as_text, reply_item
from realtime.state import Admission, ConversationStore, StateConflict

TURN_ATTEMPTS = 5


class Engine(Protocol):
    """What a turn needs of the running process (realtime/platform.py's Platform)."""

    @property
    def flows(self) -> FlowRegistry: ...
    @property
    def intents(self) -> IntentRegistry: ...
    @property
    def replies(self) -> Replies: ...
    @property
    def store(self) -> ConversationStore: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...


class UserMessage(Protocol):
    """An end user's message (the API's `MessageIn`, validated)."""

    @property
    def user_id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def conversation_id(self) -> str | None: ...
    @property
    def channel(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any] | None: ...
    @property
    def language(self) -> str | None: ...


# Admission by the caller: the first (rate-limited) or a repeated one (after a conflict).
Admit = Callable[[bool], Awaitable[Admission]]


class TurnRefused(Exception):
    """The message is not taken; nothing was recorded."""


class ConversationNotFound(TurnRefused):
    """The message names a conversation that does not exist (or expired)."""


class ConversationOfAnotherUser(TurnRefused):
    """The message names a conversation of another user of the tenant."""


class ConversationBusy(TurnRefused):
    """Other messages of the conversation kept winning the race to record their turn."""


@dataclass
class Turn:
    """A recorded turn: the API's answer, and what the caller counts or sends."""

    response: dict[str, Any]  # the fields of the contract's MessageOut
    rendered: list[Rendered]  # the replies in the channel's format (empty without `render`)
    tier: str  # what answered: flow, llm, knowledge or rules
    replies: int  # outbound messages recorded
    events: int  # events appended to the tenant's stream


async def converse(
    engine: Engine,
    tenant_id: str,
    message: UserMessage,
    admit: Admit,
    started: float,
    render: Render | None = None,
) -> Turn:
    """One end-user message through the engine, admitted by `admit`. Raises TurnRefused
    (the conversation is absent, another user's, or kept changing) or the store's
    SubjectErasing (the user's data is being erased: nothing is recorded meanwhile)."""
    admission = await admit(True)
    conversation_id = message.conversation_id or new_event_id()
    for _ in range(TURN_ATTEMPTS):
        if admission.status == "no_conversation":
            raise ConversationNotFound(message.conversation_id)
        conversation = admission.conversation
        if conversation is not None and conversation.get("user_id") != message.user_id:
            raise ConversationOfAnotherUser(message.conversation_id)
        try:
            return await take_turn(
                engine, tenant_id, message, admission, conversation_id, started, render
            )
        except StateConflict:
            # Another message of this conversation won the race: redo the turn on its state
            # (the rate limit already counted this message).
            admission = await admit(False)
    raise ConversationBusy(conversation_id)


async def take_turn(
    engine: Engine,
    tenant_id: str,
    message: UserMessage,
    admission: Admission,
    conversation_id: str,
    started: float,
    render: Render | None = None,
) -> Turn:
    """One message's turn on the conversation as `admission` loaded it (no conversation:
    this message opens `conversation_id`). StateConflict if another message's turn was
    recorded on it meanwhile; nothing is recorded then."""
    conversation = admission.conversation
    received_at = engine.clock()
    # 1. understand
    understood = await understand(
        engine.intents,
        tenant_id=tenant_id,
        text=message.text,
        message_type=message.type,
        language=message.language,
        nlu_version=admission.nlu_version,
    )
    summary = (
        orjson.loads(conversation["summary"])
        if conversation and conversation.get("summary")
        else {}
    )
    # 2. answer, the replies rendered for the channel
    reply = await answer(
        engine.flows,
        engine.replies,
        understood,
        tenant_id=tenant_id,
        user_id=message.user_id,
        text=message.text,
        message_type=message.type,
        routing=admission.routing,
        flow_state=conversation.get("flow") if conversation else None,
        context=summary.get("recent_topics", []),
    )
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    items = [reply_item(value) for value in reply.texts]
    rendered = [render(item) for item in items] if render else []
    # 3. record
    recorded = await _record(
        engine,
        tenant_id,
        conversation_id,
        message,
        conversation,
        understood,
        reply,
        items,
        rendered,
        received_at=received_at,
        latency_ms=latency_ms,
    )
    # 4. respond
    return Turn(
        response=_response(conversation_id, understood, reply, items, recorded),
        rendered=rendered,
        tier=reply.tier,
        replies=len(recorded.outbound),
        events=recorded.events,
    )


@dataclass
class _Recorded:
    inbound: MessageEvent  # the message's event
    outbound: list[MessageEvent]  # the replies' events, in order
    events: int  # every event appended, conversation events included


async def _record(
    engine: Engine,
    tenant_id: str,
    conversation_id: str,
    message: UserMessage,
    conversation: dict[str, Any] | None,
    understood: Understanding,
    reply: Answer,
    items: list[dict[str, Any]],
    rendered: list[Rendered],
    *,
    received_at: datetime,
    latency_ms: float,
) -> _Recorded:
    """The message and its replies as events, and the conversation's new state, written
    in one script: StateConflict if the conversation changed since it was loaded."""
    common: dict[str, Any] = {
        "tenant_id": tenant_id,
        "conversation_id": conversation_id,
        "user_id": message.user_id,
        "channel": message.channel,
    }
    versions: dict[str, Any] = {
        "flow_version": reply.flow_version,
        "variant": reply.variant,
        "model_version": understood.model_version,
        "language": understood.language,
    }
    inbound = message_event(
        **common,
        **versions,
        direction="in",
        type=message.type,
        text=message.text,
        payload=message.payload,
        intent=understood.intent,
        confidence=understood.confidence,
        created_at=received_at,
    )
    replied_at = engine.clock()
    usage = reply.usage
    outbound = []
    for i, item in enumerate(items):
        payload = None if item["type"] == "text" and len(item) == 2 else dict(item)
        if rendered and rendered[i].degraded:
            payload = {**(payload or {}), "degraded": rendered[i].degraded}
        outbound.append(
            message_event(
                **common,
                **versions,
                direction="out",
                type=item["type"],
                text=as_text(item),
                payload=payload,
                tier=reply.tier,
                provider=reply.provider,
                model=reply.model,
                latency_ms=latency_ms,
                # a call's tokens and cost go on its first reply, so sums count them once
                prompt_tokens=usage.prompt_tokens if usage and i == 0 else None,
                completion_tokens=usage.completion_tokens if usage and i == 0 else None,
                cost_usd=usage.cost_usd if usage and i == 0 else None,
                created_at=replied_at,
            )
        )
    fields = {
        "updated_at": replied_at.isoformat(),
        "channel": message.channel,
        "user_id": message.user_id,  # rewritten each turn: an expired hash comes back whole
        "summary": update_summary(
            conversation.get("summary") if conversation else None,
            text=message.text,
            intent=understood.intent,
            replies=len(outbound),
            slots=reply.slots,
        ),
    }
    if reply.flow_state is not None:
        fields["flow"] = reply.flow_state
    other_events = []
    if conversation is None:
        fields["created_at"] = received_at.isoformat()
        opened = conversation_event(
            "conversation_started",
            **common,
            created_at=received_at,
            payload={"flow_version": reply.flow_version, "variant": reply.variant},
        )
        other_events.append(encode(opened))
    if reply.handoff_started:
        handoff = conversation_event(
            "handoff", **common, created_at=replied_at, payload={"variant": reply.variant}
        )
        other_events.append(encode(handoff))
    events = [inbound, *outbound]
    await engine.store.record(
        tenant_id,
        conversation_id,
        message.user_id,
        fields,
        [encode(event) for event in events],
        activity_ms=int(replied_at.timestamp() * 1000),
        batch_id=inbound["event_id"],
        other_events=other_events,
        expected_rev=conversation.get("rev", "") if conversation else "",
    )
    return _Recorded(inbound, outbound, len(events) + len(other_events))


def _response(
    conversation_id: str,
    understood: Understanding,
    reply: Answer,
    items: list[dict[str, Any]],
    recorded: _Recorded,
) -> dict[str, Any]:
    """The API's answer to the message (the contract's MessageOut)."""
    answered_by: dict[str, str] = {"tier": reply.tier}
    if reply.provider:
        answered_by["provider"] = reply.provider
    if reply.model:
        answered_by["model"] = reply.model
    return {
        "conversation_id": conversation_id,
        "message_id": recorded.inbound["event_id"],
        "replies": [
            {
                "type": event["type"],
                "text": event["text"],
                "message_id": event["event_id"],
                **({"payload": item} if event["type"] != "text" else {}),
            }
            for event, item in zip(recorded.outbound, items, strict=True)
        ],
        "intent": (
            {"name": understood.intent, "confidence": understood.confidence}
            if understood.intent
            else None
        ),
        "handoff": reply.handoff,
        "answered_by": answered_by,
        "flow": {"version": reply.flow_version, "variant": reply.variant}
        if reply.flow_version is not None
        else None,
        "model_version": understood.model_version,
    }
