"""The rule tier: the last resort of the reply chain, answering from a few fixed patterns.

It never fails and never returns an empty reply: what no rule recognises gets the fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "greet",
        re.compile(r"^\s*(hi|hello|hey|hiya|howdy|good (morning|afternoon|evening))\b", re.I),
        "Hello! How can I help you today?",
    ),
    (
        "goodbye",
        re.compile(r"\b(bye|goodbye|see you|farewell)\b", re.I),
        "Goodbye! Come back any time.",
    ),
    (
        "thanks",
        re.compile(r"\b(thanks|thank you|cheers|much appreciated)\b", re.I),
        "You're welcome!",
    ),
    (
        "help",
        re.compile(r"\b(help|what can you do|support)\b", re.I),
        "I can answer questions about your account and orders, or put you in touch with a person.",
    ),
)
FALLBACK = "Sorry, I didn't quite get that. Could you rephrase it?"


@dataclass(frozen=True)
class Reply:
    """What the engine answers to one message; `tier` names the part of the chain that did."""

    texts: list[str]
    intent: str | None = None
    confidence: float | None = None
    handoff: bool = False
    tier: str = "rules"
    provider: str | None = None
    model: str | None = None


# what the user said in words: typed, or a button or quick reply they picked (its title)
TEXTUAL_TYPES = frozenset({"text", "postback", "quick_reply"})


def rule_reply(text: str, message_type: str) -> Reply:
    if message_type not in TEXTUAL_TYPES:
        return Reply([f"Thanks, I received your {message_type.replace('_', ' ')}."])
    for intent, pattern, answer in RULES:
        if pattern.search(text):
            return Reply([answer], intent=intent, confidence=1.0)
    return Reply([FALLBACK])
