import pytest

from realtime.engine.rules import FALLBACK, rule_reply


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("hello there", "greet"),
        ("Good morning!", "greet"),
        ("ok bye", "goodbye"),
        ("thank you so much", "thanks"),
        ("what can you do?", "help"),
    ],
)
def test_rules_recognise_their_patterns(text, intent):
    reply = rule_reply(text, "text")
    assert reply.intent == intent
    assert reply.confidence == 1.0
    assert reply.tier == "rules"
    assert reply.texts and all(reply.texts)


def test_unrecognised_text_gets_the_fallback_and_no_intent():
    reply = rule_reply("the quantum flux capacitor", "text")
    assert reply.intent is None
    assert reply.texts == [FALLBACK]


def test_non_text_messages_are_acknowledged():
    reply = rule_reply("", "image")
    assert reply.texts == ["Thanks, I received your image."]
    assert not reply.handoff
