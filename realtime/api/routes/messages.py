"""`POST /v1/messages`: the hot path (auth, rate limit, state, reply, event append)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from chatlake.apikeys import ParsedKey
from realtime.api.deps import client_address
from realtime.api.errors import ApiError, parse_json_body
from realtime.api.schemas import MessageIn, MessageOut, error_responses
from realtime.auth import admit, bearer_token, parse_bearer
from realtime.channels.model import Rendered, as_text, reply_item
from realtime.engine.context import update_summary
from realtime.engine.conversation import answer
from realtime.events import conversation_event, encode, message_event, new_event_id
from realtime.observability import EVENTS_APPENDED, message_series
from realtime.platform import Platform
from realtime.state import Admission, Budget, StateConflict, SubjectErasing

router = APIRouter(prefix="/v1", tags=["messages"])
TURN_ATTEMPTS = 5

ERRORS = error_responses(400, 401, 404, 409, 413, 422, 429)


@router.post(
    "/messages",
    response_model=MessageOut,
    responses=ERRORS,
    openapi_extra={
        "security": [{"HTTPBearer": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": MessageIn.model_json_schema()}},
        },
    },
)
async def post_message(request: Request) -> Response:
    """Send an end user's message; the bot's replies come back in the response."""
    # The hot path does by hand what FastAPI's dependency solving and body parsing would
    # (they cost more per request than the rest of this handler): the key from the header,
    # the body validated by pydantic straight from the bytes, in Rust.
    started = time.perf_counter()
    platform: Platform = request.app.state.platform
    key = parse_bearer(bearer_token(request.headers.get("authorization")))
    body = parse_json_body(MessageIn, await request.body())
    result, _ = await converse(platform, key, body, started, client=client_address(request))
    return Response(orjson.dumps(result), media_type="application/json")


Render = Callable[[dict[str, Any]], Rendered]


async def converse(
    platform: Platform,
    key: ParsedKey,
    body: MessageIn,
    started: float,
    render: Render | None = None,
    *,
    budgets: list[Budget] | None = None,
    client: str | None = None,
) -> tuple[dict[str, Any], list[Rendered]]:
    """One end-user message through the whole path (admission, rate limit, the engine,
    state and events): the API's answer, and the replies rendered by `render` (a channel's
    renderer; its degradations are recorded on the replies' events). The message counts
    against `budgets` (default: the tenant's API budget); `client` is the caller's address
    (failed authentications are limited per address)."""
    admission = await admit(
        platform,
        key,
        rate_limited=True,
        conversation_id=body.conversation_id,
        budgets=budgets,
        client=client,
    )
    conversation_id = body.conversation_id or new_event_id()
    for _ in range(TURN_ATTEMPTS):
        if admission.status == "no_conversation":
            raise ApiError(404, f"conversation {body.conversation_id} not found")
        conversation = admission.conversation
        if conversation is not None and conversation.get("user_id") != body.user_id:
            raise ApiError(
                409, "the conversation belongs to another user", code="conversation_user_mismatch"
            )
        try:
            return await _turn(
                platform, key.tenant_id, body, admission, conversation_id, started, render
            )
        except SubjectErasing:
            raise ApiError(
                409, "this user's data is being erased; send the message again when the "
                "erasure has finished", code="erasure_in_progress",
            ) from None  # fmt: skip
        except StateConflict:
            # Another message of this conversation won the race: redo the turn on its state
            # (the rate limit already counted this message).
            admission = await admit(
                platform, key, rate_limited=False, conversation_id=body.conversation_id,
                client=client,
            )  # fmt: skip
            continue
    raise ApiError(
        409, "the conversation kept changing while this message was handled; send it again",
        code="conversation_busy",
    )  # fmt: skip


async def _turn(
    platform: Platform,
    tenant_id: str,
    body: MessageIn,
    admission: Admission,
    conversation_id: str,
    started: float,
    render: Render | None = None,
) -> tuple[dict[str, Any], list[Rendered]]:
    """One message's turn: answer it, then record state and events in one script."""
    conversation = admission.conversation
    received_at = platform.clock()
    summary = (
        orjson.loads(conversation["summary"])
        if conversation and conversation.get("summary")
        else {}
    )
    reply = await answer(
        platform.flows,
        platform.intents,
        platform.replies,
        tenant_id=tenant_id,
        user_id=body.user_id,
        text=body.text,
        message_type=body.type,
        language=body.language,
        routing=admission.routing,
        nlu_version=admission.nlu_version,
        flow_state=conversation.get("flow") if conversation else None,
        context=summary.get("recent_topics", []),
    )
    common: dict[str, Any] = {
        "tenant_id": tenant_id,
        "conversation_id": conversation_id,
        "user_id": body.user_id,
        "channel": body.channel,
    }
    versions: dict[str, Any] = {
        "flow_version": reply.flow_version,
        "variant": reply.variant,
        "model_version": reply.model_version,
        "language": reply.language,
    }
    inbound = message_event(
        **common,
        **versions,
        direction="in",
        type=body.type,
        text=body.text,
        payload=body.payload,
        intent=reply.intent,
        confidence=reply.confidence,
        created_at=received_at,
    )
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    replied_at = platform.clock()
    usage = reply.usage
    items = [reply_item(value) for value in reply.texts]
    rendered = [render(item) for item in items] if render else []
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
        "channel": body.channel,
        "user_id": body.user_id,  # rewritten each turn: an expired hash comes back whole
        "summary": update_summary(
            conversation.get("summary") if conversation else None,
            text=body.text,
            intent=reply.intent,
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
    await platform.store.record(
        tenant_id,
        conversation_id,
        body.user_id,
        fields,
        [encode(event) for event in events],
        activity_ms=int(replied_at.timestamp() * 1000),
        batch_id=inbound["event_id"],
        other_events=other_events,
        expected_rev=conversation.get("rev", "") if conversation else "",
    )
    EVENTS_APPENDED.inc(len(events) + len(other_events))
    message_series("in", "").inc()
    message_series("out", reply.tier).inc(len(outbound))

    answered_by: dict[str, str] = {"tier": reply.tier}
    if reply.provider:
        answered_by["provider"] = reply.provider
    if reply.model:
        answered_by["model"] = reply.model
    result = {
        "conversation_id": conversation_id,
        "message_id": inbound["event_id"],
        "replies": [
            {
                "type": event["type"],
                "text": event["text"],
                "message_id": event["event_id"],
                **({"payload": item} if event["type"] != "text" else {}),
            }
            for event, item in zip(outbound, items, strict=True)
        ],
        "intent": (
            {"name": reply.intent, "confidence": reply.confidence} if reply.intent else None
        ),
        "handoff": reply.handoff,
        "answered_by": answered_by,
        "flow": {"version": reply.flow_version, "variant": reply.variant}
        if reply.flow_version is not None
        else None,
        "model_version": reply.model_version,
    }
    return result, rendered
