"""Bounded conversation context: a running summary plus the most recent turns.

A conversation's state in Redis never grows with its length: the message list keeps the
last `RECENT_MESSAGES` messages (realtime/state.py; the full history is in the lake), and
a summary of the whole conversation (how long it is, what it was about, what the user
gave us) is updated with every message. The reply chain gets both as its context.
"""

from __future__ import annotations

from typing import Any

import orjson

TOPICS = 5  # the user's last few messages, shortened
TOPIC_CHARS = 120
INTENTS = 10


def update_summary(
    raw: str | None, *, text: str, intent: str | None, replies: int, slots: dict[str, Any]
) -> str:
    """The conversation's summary after one more user message and its replies."""
    summary: dict[str, Any] = orjson.loads(raw) if raw else {}
    summary["messages"] = summary.get("messages", 0) + 1 + replies
    summary["user_messages"] = summary.get("user_messages", 0) + 1
    if text and "first_user_message" not in summary:
        summary["first_user_message"] = text[:TOPIC_CHARS]
    if intent:
        counts = summary.setdefault("intents", {})
        counts[intent] = counts.get(intent, 0) + 1
        if len(counts) > INTENTS:  # keep the most frequent
            summary["intents"] = dict(sorted(counts.items(), key=lambda kv: -kv[1])[:INTENTS])
    if text:
        summary["recent_topics"] = [*summary.get("recent_topics", []), text[:TOPIC_CHARS]][-TOPICS:]
    if slots:
        summary["known"] = {k: v for k, v in slots.items() if isinstance(v, str | int | float)}
    return orjson.dumps(summary).decode()
