"""Great Expectations suites for silver and the marts, validated in memory (an ephemeral
context over a pandas batch: no project folder, no network). Great Expectations is imported
when a check first runs, not when the code location loads (it takes seconds), so runs
that check nothing (erasure, retraining) start faster."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pandas as pd

if TYPE_CHECKING:
    import great_expectations as gx

EMAIL = r"[\w.+-]+@[\w-]+\.[\w.-]+"
PSEUDONYM = r"^[0-9a-f]{32}$"


def _gx() -> ModuleType:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations

    return great_expectations


@cache
def _context() -> Any:
    """One ephemeral context per process (GX needs an active one to build suites)."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = _gx().get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _suite(name: str, expectations: list[Any]) -> gx.ExpectationSuite:
    _context()
    suite = _gx().ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def silver_turns_suite() -> gx.ExpectationSuite:
    e = _gx().expectations
    return _suite("silver_turns", [
        e.ExpectColumnValuesToNotBeNull(column="event_id"),
        e.ExpectColumnValuesToBeUnique(column="event_id"),
        e.ExpectColumnValuesToNotBeNull(column="tenant_id"),
        e.ExpectColumnValuesToNotBeNull(column="created_at"),
        e.ExpectColumnValuesToBeInSet(column="direction", value_set=["in", "out"]),
        e.ExpectColumnValuesToMatchRegex(column="user_key", regex=PSEUDONYM),
        e.ExpectColumnValuesToNotMatchRegex(column="text", regex=EMAIL),  # masked
        e.ExpectColumnValuesToBeBetween(column="confidence", min_value=0, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="latency_ms", min_value=0),
    ])  # fmt: skip


def silver_events_suite() -> gx.ExpectationSuite:
    e = _gx().expectations
    return _suite("silver_conversation_events", [
        e.ExpectColumnValuesToNotBeNull(column="event_id"),
        e.ExpectColumnValuesToBeUnique(column="event_id"),
        e.ExpectColumnValuesToNotBeNull(column="event_type"),
        e.ExpectColumnValuesToMatchRegex(column="user_key", regex=PSEUDONYM),
    ])  # fmt: skip


def tenant_daily_suite() -> gx.ExpectationSuite:
    e = _gx().expectations
    rates = ["completion_rate", "escalation_rate", "fallback_rate"]
    return _suite("fct_tenant_daily", [
        e.ExpectCompoundColumnsToBeUnique(column_list=["tenant_id", "day"]),
        *[e.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1) for c in rates],
        *[e.ExpectColumnValuesToBeBetween(column=c, min_value=0)
          for c in ["messages_in", "messages_out", "conversations", "active_users"]],
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="latency_p95_ms", column_B="latency_p50_ms", or_equal=True,
            ignore_row_if="either_value_is_missing",
        ),
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="messages_in", column_B="active_users", or_equal=True
        ),
    ])  # fmt: skip


def conversations_suite() -> gx.ExpectationSuite:
    e = _gx().expectations
    return _suite("fct_conversations", [
        e.ExpectColumnValuesToBeUnique(column="conversation_id"),
        e.ExpectColumnValuesToBeInSet(column="status",
                                      value_set=["completed", "abandoned", "escalated"]),
        e.ExpectColumnValuesToBeBetween(column="duration_s", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="turns", min_value=0),
        e.ExpectColumnValuesToMatchRegex(column="user_key", regex=PSEUDONYM),
    ])  # fmt: skip


@dataclass(frozen=True)
class Validation:
    success: bool
    rows: int
    failed: list[dict[str, Any]]  # expectation type, column(s), unexpected count


def validate(frame: pd.DataFrame, suite: gx.ExpectationSuite) -> Validation:
    batch = (
        _context()
        .data_sources.add_pandas(f"memory-{uuid4().hex}")
        .add_dataframe_asset(suite.name)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result = batch.validate(suite)
    failed = [
        {
            "expectation": r.expectation_config.type,
            "kwargs": {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"},
            "unexpected": (r.result or {}).get("unexpected_count"),
        }
        for r in result.results
        if not r.success
    ]
    return Validation(bool(result.success), len(frame), failed)
