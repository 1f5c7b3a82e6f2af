"""An end user's message, however it came (`POST /v1/messages`, a channel's webhook, the web
widget): admitted with the caller's API key (realtime/auth.py), taken through the
engine's conversation turn (realtime/engine/turn.py), counted on /metrics, and the
engine's refusals answered as the API's errors (realtime/api/errors.py)."""

from __future__ import annotations

from typing import Any

from chatlake.apikeys import ParsedKey
from realtime.api.errors import ApiError
from realtime.auth import admit
from realtime.engine import turn
from realtime.engine.replies import Render, Rendered
from realtime.observability import EVENTS_APPENDED, message_series
from realtime.platform import Platform
from realtime.state import Admission, Budget, SubjectErasing


async def converse(
    platform: Platform,
    key: ParsedKey,
    body: turn.UserMessage,
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

    async def admission(first: bool) -> Admission:
        if first:
            return await admit(
                platform, key, rate_limited=True, conversation_id=body.conversation_id,
                budgets=budgets, client=client,
            )  # fmt: skip
        # after a conflict: the conversation read again, the message not counted twice
        return await admit(
            platform, key, rate_limited=False, conversation_id=body.conversation_id,
            client=client,
        )  # fmt: skip

    try:
        done = await turn.converse(platform, key.tenant_id, body, admission, started, render)
    except turn.ConversationNotFound:
        raise ApiError(404, f"conversation {body.conversation_id} not found") from None
    except turn.ConversationOfAnotherUser:
        raise ApiError(
            409, "the conversation belongs to another user", code="conversation_user_mismatch"
        ) from None
    except SubjectErasing:
        raise ApiError(
            409, "this user's data is being erased; send the message again when the "
            "erasure has finished", code="erasure_in_progress",
        ) from None  # fmt: skip
    except turn.ConversationBusy:
        raise ApiError(
            409, "the conversation kept changing while this message was handled; send it again",
            code="conversation_busy",
        ) from None  # fmt: skip
    EVENTS_APPENDED.inc(done.events)
    message_series("in", "").inc()
    message_series("out", done.tier).inc(done.replies)
    return done.response, done.rendered
