"""The flow engine (the Message Control Processor): one user message, one step of the
tenant's state machine.

A flow is a JSON document (validated by `flow.schema.json` plus reference checks). The
engine is a pure function of (flow, the conversation's `FlowState`, the parsed message):
it keeps nothing in process memory, so whichever API replica takes the next message
continues where the last one stopped. The state lives in the conversation's Redis hash.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import orjson
from jsonschema import Draft202012Validator, FormatChecker

from nlu.entities import compile_tenant_pattern
from realtime.engine.replies import validate_reply

log = logging.getLogger(__name__)

MAX_STEPS = 25  # states entered for one message: a `next` cycle stops here
DEFAULT_INVALID = "Sorry, that doesn't look right."
# A step runs on the event loop every tenant shares: the tenant's patterns run on RE2
# (linear time, no backtracking), a rendered text is capped (a `say` of many `{slot}`s
# would otherwise multiply a long answer), and past this budget no further pattern is
# tried: the message falls back rather than hold everyone else's requests.
STEP_BUDGET_S = 0.2
MAX_RENDERED_CHARS = 8192


@lru_cache(maxsize=1)
def flow_schema() -> dict[str, Any]:
    text = resources.files("realtime.engine.flows").joinpath("flow.schema.json").read_text()
    return dict(json.loads(text))


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(flow_schema(), format_checker=FormatChecker())


class FlowInvalid(ValueError):
    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['path']}: {p['problem']}" for p in problems[:5]))
        self.problems = problems


def _path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_flow(document: Any) -> None:
    """Raise FlowInvalid naming the offending place of every problem found."""
    problems = [
        {"path": _path(error.absolute_path), "problem": error.message}
        for error in sorted(_validator().iter_errors(document), key=lambda e: list(e.path))
    ]
    if problems:
        raise FlowInvalid(problems)
    states = document["states"]

    def check(name: str, where: list[Any]) -> None:
        if name not in states:
            problems.append({"path": _path(where), "problem": f"no state named {name!r}"})

    check(document["start"], ["start"])
    for i, transition in enumerate(document.get("global_transitions", [])):
        check(transition["to"], ["global_transitions", i, "to"])
    for name, state in states.items():
        for key in ("next",):
            if key in state:
                check(state[key], ["states", name, key])
        if "slot" in state and "on_failure" in state["slot"]:
            check(state["slot"]["on_failure"], ["states", name, "slot", "on_failure"])
        for i, transition in enumerate(state.get("transitions", [])):
            check(transition["to"], ["states", name, "transitions", i, "to"])
    for where, reply in _rich_replies(document):
        problem = validate_reply(reply)
        if problem:
            problems.append({"path": _path(where), "problem": problem})
    for where, pattern in _patterns(document):
        try:
            compile_tenant_pattern(pattern)
        except ValueError as exc:
            problems.append({"path": _path(where), "problem": str(exc)})
    if not problems:
        problems += _next_cycles(states)
    if problems:
        raise FlowInvalid(problems)


def _rich_replies(document: dict[str, Any]) -> Iterator[tuple[list[Any], dict[str, Any]]]:
    """Every rich reply of the flow, with where it is."""
    places: list[tuple[list[Any], Any]] = [(["fallback", "say"], document.get("fallback", {}))]
    for name, state in document["states"].items():
        places.append((["states", name, "say"], state))
        slot = state.get("slot", {})
        for key in ("prompt", "invalid"):
            places.append((["states", name, "slot", key], {"say": slot.get(key)}))
    for where, holder in places:
        value = holder.get("say") if isinstance(holder, dict) else None
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, dict):
                yield ([*where, i] if isinstance(value, list) else where), item


def _patterns(document: dict[str, Any]) -> Iterator[tuple[list[Any], str]]:
    """Every regular expression of the flow, with where it is."""
    for i, transition in enumerate(document.get("global_transitions", [])):
        if "pattern" in (transition.get("when") or {}):
            yield ["global_transitions", i, "when", "pattern"], transition["when"]["pattern"]
    for name, state in document["states"].items():
        for i, transition in enumerate(state.get("transitions", [])):
            if "pattern" in (transition.get("when") or {}):
                where = ["states", name, "transitions", i, "when", "pattern"]
                yield where, transition["when"]["pattern"]
        if "pattern" in state.get("slot", {}):
            yield ["states", name, "slot", "pattern"], state["slot"]["pattern"]


@lru_cache(maxsize=4096)
def tenant_regex(pattern: str) -> Any | None:
    """The pattern compiled on RE2 (case-insensitive), or None for one RE2 cannot run (a
    flow published before patterns were checked at PUT): it matches nothing."""
    try:
        return compile_tenant_pattern(pattern)
    except ValueError:
        return None


def _next_cycles(states: dict[str, Any]) -> list[dict[str, str]]:
    """`next` chains that come back on themselves without a state that waits (a slot, a
    handoff or an end) would answer one message for ever."""
    problems = []
    for start in states:
        seen = [start]
        name = start
        while True:
            state = states[name]
            if "slot" in state or state.get("handoff") or state.get("end") or "next" not in state:
                break
            name = state["next"]
            if name in seen:
                if name == start:
                    cycle = " -> ".join([*seen, name])
                    problems.append(
                        {
                            "path": _path(["states", start, "next"]),
                            "problem": f"endless cycle {cycle}",
                        }
                    )
                break
            seen.append(name)
    return problems


@dataclass
class FlowState:
    """Where a conversation is in its flow; stored as JSON with the conversation."""

    version: int
    state: str
    variant: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    waiting: bool = False  # a slot's prompt was sent; the next message answers it
    attempts: int = 0
    handoff: bool = False
    turns: int = 0

    def dumps(self) -> str:
        # vars(), not dataclasses.asdict: this runs on every message and asdict deep-copies.
        return orjson.dumps(vars(self)).decode()

    @classmethod
    def loads(cls, raw: str | bytes) -> FlowState:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True)
class Message:
    text: str
    intent: str | None
    confidence: float | None
    entities: list[dict[str, Any]]


Say = str | dict[str, Any]  # a text, or a rich reply (realtime/engine/replies.py)


@dataclass
class StepResult:
    texts: list[Say]
    state: FlowState
    handoff: bool
    used_reply_chain: bool = False
    visited: list[str] = field(default_factory=list)


ReplyChain = Callable[[Message], list[str]]


def _texts(value: Say | list[Say] | None, slots: dict[str, Any]) -> list[Say]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [_fill(item, slots) for item in items]


def _fill(item: Any, slots: dict[str, Any]) -> Any:
    """`{slot}` replaced in a text, or in every text of a rich reply."""
    if isinstance(item, str):
        return _render(item, slots)
    if isinstance(item, list):
        return [_fill(part, slots) for part in item]
    if isinstance(item, dict):
        return {key: _fill(part, slots) for key, part in item.items()}
    return item


PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _render(text: str, slots: dict[str, Any]) -> str:
    """`{slot}` filled in, the result cut at MAX_RENDERED_CHARS as it is built."""
    out: list[str] = []
    size = 0
    last = 0
    for match in PLACEHOLDER.finditer(text):
        piece = text[last : match.start()] + str(slots.get(match.group(1), match.group(0)))
        out.append(piece)
        size += len(piece)
        last = match.end()
        if size >= MAX_RENDERED_CHARS:
            return "".join(out)[:MAX_RENDERED_CHARS]
    out.append(text[last:])
    return "".join(out)[:MAX_RENDERED_CHARS]


def _search(pattern: str, text: str) -> bool:
    regex = tenant_regex(pattern)
    return regex is not None and regex.search(text) is not None


def _holds(condition: dict[str, Any] | None, message: Message, slots: dict[str, Any]) -> bool:
    if not condition:
        return True
    if "intent" in condition:
        if message.intent != condition["intent"]:
            return False
        if (message.confidence or 0.0) < condition.get("min_confidence", 0.0):
            return False
    if "pattern" in condition and not _search(condition["pattern"], message.text):
        return False
    if "entity" in condition and not any(
        e["entity"] == condition["entity"] for e in message.entities
    ):
        return False
    if "slot_filled" in condition and condition["slot_filled"] not in slots:
        return False
    if "slot_empty" in condition and condition["slot_empty"] in slots:
        return False
    return all(slots.get(k) == v for k, v in condition.get("slot_equals", {}).items())


def _match(
    transitions: list[dict[str, Any]],
    message: Message,
    slots: dict[str, Any],
    deadline: float | None = None,
) -> dict[str, Any] | None:
    for transition in transitions:
        if deadline is not None and time.monotonic() > deadline:
            log.warning("flow step over its time budget: no further transition tried")
            return None
        condition = transition.get("when")
        if _holds(condition, message, slots):
            return transition
    return None


def _slot_value(slot: dict[str, Any], message: Message) -> Any | None:
    """The slot's value in the message, or None when the answer does not fit."""
    if "entity" in slot:
        found = [e for e in message.entities if e["entity"] == slot["entity"]]
        if not found:
            return None
        value, text = found[0]["value"], found[0]["text"]
    else:
        value = text = message.text.strip()
        if not value:  # an image, a location, an empty message: no answer to a text slot
            return None
    if "pattern" in slot:
        regex = tenant_regex(slot["pattern"])
        if regex is None or regex.fullmatch(str(text).strip()) is None:
            return None
    return value


class FlowRun:
    """One message through the flow."""

    def __init__(
        self, flow: dict[str, Any], state: FlowState, message: Message, chain: ReplyChain
    ) -> None:
        self.flow = flow
        self.fs = state
        self.message = message
        self.chain = chain
        self.out: list[Say] = []
        self.used_chain = False
        self.visited: list[str] = []
        # Once the message has answered a slot it must not fill the next one as well.
        self.consumed = False
        self.deadline = time.monotonic() + STEP_BUDGET_S

    def result(self) -> StepResult:
        return StepResult(self.out, self.fs, self.fs.handoff, self.used_chain, self.visited)

    def step(self) -> StepResult:
        fs, states = self.fs, self.flow["states"]
        fs.turns += 1
        if fs.handoff:  # a person has the conversation: the bot stays quiet
            return self.result()
        current = states.get(fs.state) or states[self.flow["start"]]
        transition = _match(
            self.flow.get("global_transitions", []), self.message, fs.slots, self.deadline
        )
        if transition is None and fs.waiting and "slot" in current:
            return self._answer_slot(current)
        if transition is None:
            transition = _match(
                current.get("transitions", []), self.message, fs.slots, self.deadline
            )
        if transition is None:
            self._fallback()
            return self.result()
        self._follow(transition)
        return self.result()

    def _follow(self, transition: dict[str, Any]) -> None:
        for name in transition.get("clear_slots", []):
            self.fs.slots.pop(name, None)
        self.fs.waiting = False
        self.fs.attempts = 0
        self._enter(transition["to"])

    def _answer_slot(self, current: dict[str, Any]) -> StepResult:
        slot, fs = current["slot"], self.fs
        value = _slot_value(slot, self.message)
        if value is not None:
            fs.slots[slot["name"]] = value
            fs.waiting = False
            fs.attempts = 0
            self.consumed = True
            self._continue(current, depth=0)
            return self.result()
        fs.attempts += 1
        if fs.attempts >= slot.get("max_attempts", 3):
            fs.waiting = False
            fs.attempts = 0
            self.out += _texts(slot.get("invalid", DEFAULT_INVALID), fs.slots)
            self._enter(slot.get("on_failure", self.flow["start"]))
            return self.result()
        self.out += _texts(slot.get("invalid", DEFAULT_INVALID), fs.slots)
        self.out += _texts(slot["prompt"], fs.slots)
        return self.result()

    def _fallback(self) -> None:
        fallback = self.flow.get("fallback", {"reply_chain": True})
        self.out += _texts(fallback.get("say"), self.fs.slots)
        if fallback.get("reply_chain", "say" not in fallback):
            self._use_chain()

    def _use_chain(self) -> None:
        self.used_chain = True
        self.out += self.chain(self.message)

    def _enter(self, name: str, depth: int = 0) -> None:
        if depth >= MAX_STEPS:
            return
        fs, state = self.fs, self.flow["states"][name]
        fs.state = name
        self.visited.append(name)
        self.out += _texts(state.get("say"), fs.slots)
        if state.get("reply_chain"):
            self._use_chain()
        if state.get("handoff"):
            fs.handoff = True
            return
        if "slot" in state and state["slot"]["name"] not in fs.slots:
            slot = state["slot"]
            # The message that led here may already carry the value ("order 12345?").
            prefill = "entity" in slot and not self.consumed
            value = _slot_value(slot, self.message) if prefill else None
            if value is None:
                self.out += _texts(slot["prompt"], fs.slots)
                fs.waiting = True
                return
            fs.slots[slot["name"]] = value
            self.consumed = True
        self._continue(state, depth)

    def _continue(self, state: dict[str, Any], depth: int) -> None:
        """After a state is done (entered, or its slot filled): end, follow a transition
        that already holds on the slots, or go on to `next`."""
        if state.get("end"):
            self.fs.state = self.flow["start"]
            self.fs.slots = {}
            return
        automatic = [t for t in state.get("transitions", []) if _is_automatic(t)]
        transition = _match(automatic, self.message, self.fs.slots)
        if transition is not None:
            for slot in transition.get("clear_slots", []):
                self.fs.slots.pop(slot, None)
            self._enter(transition["to"], depth + 1)
        elif "next" in state:
            self._enter(state["next"], depth + 1)


def _is_automatic(transition: dict[str, Any]) -> bool:
    """A transition on slots alone is taken as soon as it holds, without a new message."""
    condition = transition.get("when") or {}
    return bool(condition) and set(condition) <= {"slot_filled", "slot_empty", "slot_equals"}


@lru_cache(maxsize=1)
def sample_flow() -> dict[str, Any]:
    """The flow every new tenant starts with."""
    text = resources.files("realtime.engine.flows").joinpath("sample_flow.json").read_text()
    return dict(json.loads(text))


def run_step(
    flow: dict[str, Any], state: FlowState | None, version: int, variant: str | None,
    message: Message, chain: ReplyChain,
) -> StepResult:  # fmt: skip
    """Advance a conversation by one message (a new one starts at the flow's `start`)."""
    if state is None:
        state = FlowState(version=version, state=flow["start"], variant=variant)
    return FlowRun(flow, state, message, chain).step()
