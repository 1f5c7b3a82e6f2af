"""The flow engine step, as a pure function (the API tests drive the sample flow)."""

import pytest

from realtime.engine.flows.engine import FlowInvalid, Message, run_step, validate_flow

TWO_NUMBERS = {
    "start": "entry",
    "states": {
        "entry": {"transitions": [{"when": {"pattern": "trip"}, "to": "from"}]},
        "from": {
            "slot": {"name": "a", "prompt": "From?", "entity": "number"},
            "transitions": [{"when": {"slot_filled": "a"}, "to": "to"}],
        },
        "to": {
            "slot": {"name": "b", "prompt": "To?", "entity": "number"},
            "transitions": [{"when": {"slot_filled": "b"}, "to": "done"}],
        },
        "done": {"say": "{a}->{b}", "end": True},
        "ask_name": {"slot": {"name": "name", "prompt": "Name?"}, "next": "hi"},
        "hi": {"say": "hi {name}", "end": True},
    },
}


def number(n):
    return [{"entity": "number", "value": n, "text": str(n), "start": 0, "end": len(str(n))}]


def chain(message):
    return ["(chain)"]


def test_one_answer_fills_one_slot_only():
    asked = run_step(TWO_NUMBERS, None, 1, None, Message("a trip", None, None, []), chain)
    assert asked.texts == ["From?"]
    first = run_step(TWO_NUMBERS, asked.state, 1, None, Message("5", None, None, number(5)), chain)
    assert first.texts == ["To?"]
    second = run_step(TWO_NUMBERS, first.state, 1, None, Message("7", None, None, number(7)), chain)
    assert second.texts == ["5->7"]


def test_a_message_that_leads_into_a_form_can_fill_its_first_slot():
    step = run_step(TWO_NUMBERS, None, 1, None, Message("trip 3", None, None, number(3)), chain)
    assert step.texts == ["To?"] and step.state.slots == {"a": 3}


def test_an_empty_answer_does_not_fill_a_text_slot():
    hello = {"transitions": [{"when": {"pattern": "name"}, "to": "ask_name"}]}
    flow = {**TWO_NUMBERS, "start": "hello", "states": {**TWO_NUMBERS["states"], "hello": hello}}
    asked = run_step(flow, None, 1, None, Message("my name", None, None, []), chain)
    assert asked.texts == ["Name?"]
    empty = run_step(flow, asked.state, 1, None, Message("", None, None, []), chain)
    assert empty.state.slots == {} and empty.texts[-1] == "Name?"
    named = run_step(flow, empty.state, 1, None, Message("Ada", None, None, []), chain)
    assert named.texts == ["hi Ada"]


def test_endless_next_cycles_are_refused():
    looping = {"start": "a", "states": {"a": {"say": "x", "next": "b"}, "b": {"next": "a"}}}
    with pytest.raises(FlowInvalid, match="endless cycle"):
        validate_flow(looping)
    waits = {
        "start": "a",
        "states": {"a": {"next": "b"}, "b": {"slot": {"name": "s", "prompt": "?"}, "next": "a"}},
    }
    validate_flow(waits)


def test_a_say_of_many_slots_cannot_blow_up_one_long_answer():
    flow = {
        "start": "entry",
        "states": {
            "entry": {"transitions": [{"to": "ask"}]},
            "ask": {"slot": {"name": "x", "prompt": "?"}, "next": "echo"},
            "echo": {"say": "{x}" * 1300, "end": True},
        },
    }
    validate_flow(flow)
    asked = run_step(flow, None, 1, None, Message("go", None, None, []), chain)
    assert asked.texts == ["?"]
    answer = Message("y" * 8000, None, None, [])
    echoed = run_step(flow, asked.state, 1, None, answer, chain)
    # uncapped: 1300 copies of the 8000-character answer, 10 MB for one message
    assert len(echoed.texts[0]) <= 8192


def test_patterns_run_on_re2_and_one_re2_cannot_run_matches_nothing():
    flow = {
        "start": "entry",
        "states": {
            "entry": {
                "transitions": [
                    {"when": {"pattern": r"(a)\1"}, "to": "never"},  # published before checks
                    {"when": {"pattern": "^(a+)+$"}, "to": "as"},
                ]
            },
            "never": {"say": "backreference", "end": True},
            "as": {"say": "only a's", "end": True},
        },
    }
    with pytest.raises(FlowInvalid) as refused:
        validate_flow(flow)
    assert refused.value.problems[0]["path"] == "$.states.entry.transitions[0].when.pattern"
    assert "RE2" in refused.value.problems[0]["problem"]
    step = run_step(flow, None, 1, None, Message("AAAA", None, None, []), chain)
    assert step.texts == ["only a's"]  # case-insensitive, as before
    slow = run_step(flow, None, 1, None, Message("a" * 5000 + "!", None, None, []), chain)
    assert slow.texts == ["(chain)"]  # no match, and no backtracking
