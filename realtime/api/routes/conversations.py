"""Conversations of the calling tenant: one with its messages, or a user's list."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query

from realtime.api.deps import PlatformDep, TenantDep
from realtime.api.errors import ApiError
from realtime.api.schemas import (
    CONVERSATION_ID_PATTERN,
    ConversationList,
    ConversationOut,
    ConversationSummary,
    MessageRecord,
    error_responses,
)

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
_ID = re.compile(CONVERSATION_ID_PATTERN)
ERRORS = error_responses(401, 404, 422)


def _summary(conversation_id: str, meta: dict[str, str]) -> ConversationSummary:
    return ConversationSummary(
        conversation_id=conversation_id,
        user_id=meta.get("user_id", ""),
        channel=meta.get("channel", ""),
        created_at=meta.get("created_at", ""),
        updated_at=meta.get("updated_at", ""),
        message_count=int(meta.get("message_count", 0)),
    )


def _record(event: dict[str, Any]) -> MessageRecord:
    payload = event.get("payload")
    return MessageRecord(
        message_id=event["event_id"],
        direction=event["direction"],
        type=event["type"],
        text=event["text"],
        payload=orjson.loads(payload) if payload else None,
        intent=event.get("intent"),
        confidence=event.get("confidence"),
        created_at=event["created_at"],
    )


@router.get("/{conversation_id}", response_model=ConversationOut, responses=ERRORS)
async def get_conversation(
    conversation_id: str, tenant: TenantDep, platform: PlatformDep
) -> ConversationOut:
    """The conversation with its messages, oldest first."""
    found = None
    if _ID.match(conversation_id):
        found = await platform.store.conversation(tenant.tenant_id, conversation_id)
    if found is None:
        # Another tenant's conversation is just as absent as one that never existed.
        raise ApiError(404, f"conversation {conversation_id} not found")
    meta, events = found
    summary = _summary(conversation_id, meta)
    return ConversationOut(
        **summary.model_dump(),
        summary=orjson.loads(meta["summary"]) if meta.get("summary") else None,
        messages=[_record(e) for e in events],
    )


@router.get("", response_model=ConversationList, responses=ERRORS)
async def list_conversations(
    tenant: TenantDep,
    platform: PlatformDep,
    user_id: Annotated[str, Query(min_length=1, max_length=256)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ConversationList:
    """A user's conversations, most recently active first."""
    rows = await platform.store.user_conversations(tenant.tenant_id, user_id, limit)
    return ConversationList(conversations=[_summary(row["conversation_id"], row) for row in rows])


@router.post("/{conversation_id}/handoff/release", responses=ERRORS)
async def release_handoff(
    conversation_id: str, tenant: TenantDep, platform: PlatformDep
) -> dict[str, Any]:
    """A person is done: the bot answers this conversation again, from the flow's start."""
    released = _ID.match(conversation_id) and await platform.store.release_handoff(
        tenant.tenant_id, conversation_id
    )
    if not released:
        raise ApiError(404, f"conversation {conversation_id} not found or not handed off")
    return {"conversation_id": conversation_id, "handoff": False}
