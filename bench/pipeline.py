"""`chatlake bench pipeline`: a full materialization of the lakehouse, then one incremental
day, on generated bronze data, against a ceiling measured in the same run.

It generates `--messages` message events (default 1,000,000) across `--tenants` tenants
(100) over `--days` days (10) straight into a fresh lake's bronze tables (in a temporary
home, so nothing of yours is touched), with the shapes the realtime path writes: turns of
one user message and one or two replies, the tiers of the reply chain with tokens and cost,
intents, handoffs, ratings, and some PII to mask. Then `chatlake pipeline run` builds
silver, the dbt warehouse and every check, as a user would run it; then one more day is
generated and built alone (`--from`/`--to` that day). The ceiling is DuckDB reading the
same bronze rows once and aggregating them per tenant and day (the least any pipeline
over this data must do); the result is reported as that ceiling's time over ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from bench.output import write_results
from chatlake.errors import ChatlakeError
from lake.datasets import arrow_dataset
from lake.schemas import (
    BRONZE_CONVERSATION_EVENTS,
    BRONZE_MESSAGES,
    CONVERSATION_EVENTS_TABLE,
    MESSAGES_TABLE,
    PARTITION_BY,
)
from lake.writer import table_uri

BENCH_DIR = Path(__file__).parent
USER_TEXTS = [
    "hello", "where is my order {n}?", "I want to change my delivery address",
    "what are your opening hours", "can I pay with paypal", "my email is user{n}@example.com",
    "card 4111 1111 1111 1111 was charged twice", "talk to a human please", "thanks, bye",
    "do you ship to {n} countries?", "zxqv something the bot cannot know",
]  # fmt: skip
INTENTS = ["greet", "order_status", "change_address", "hours", "payment", None, None,
           "human", "goodbye", "shipping", None]  # fmt: skip
TIERS = np.array(["flow", "llm", "knowledge", "rules"])
TIER_WEIGHTS = [0.6, 0.2, 0.1, 0.1]


def generate_day(
    day: date, messages: int, tenant_ids: list[str], rng: np.random.Generator
) -> tuple[pa.Table, pa.Table]:
    """About `messages` message rows for `day` (and their conversation events)."""
    turns = messages // 2
    per_conversation = rng.integers(1, 8, size=turns)  # sums to at least `turns`
    conversation_of_turn = np.repeat(np.arange(len(per_conversation)), per_conversation)[:turns]
    conversations = int(conversation_of_turn.max()) + 1
    tenant_of = rng.integers(0, len(tenant_ids), size=conversations)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    conv_start = rng.uniform(0, 86_000, size=conversations)
    conv_ids = [uuid.uuid4().hex for _ in range(conversations)]
    users = [f"user-{int(u)}@example.com" for u in rng.integers(0, 20_000, size=conversations)]
    which = rng.integers(0, len(USER_TEXTS), size=turns)
    tiers = rng.choice(TIERS, size=turns, p=TIER_WEIGHTS)
    latency = np.round(rng.lognormal(mean=1.0, sigma=0.8, size=turns), 3)
    second_reply = rng.random(turns) < 0.1
    rows: dict[str, list[Any]] = {name: [] for name in BRONZE_MESSAGES.names}
    position = np.zeros(conversations)

    def add(**values: Any) -> None:
        for name in rows:
            rows[name].append(values.get(name))

    for t in range(turns):
        c = int(conversation_of_turn[t])
        offset = conv_start[c] + position[c] * 20
        position[c] += 1
        received = start + timedelta(seconds=min(offset, 86_399))
        replied = received + timedelta(milliseconds=float(latency[t]))
        common = {"tenant_id": tenant_ids[tenant_of[c]], "conversation_id": conv_ids[c],
                  "user_id": users[c], "channel": "web", "event_type": "message", "date": day,
                  "type": "text"}  # fmt: skip
        intent = INTENTS[which[t]]
        add(**common, event_id=uuid.uuid4().hex, direction="in", created_at=received,
            text=USER_TEXTS[which[t]].format(n=t % 1000), intent=intent,
            confidence=None if intent is None else round(0.5 + (t % 50) / 100, 2),
            language="en")  # fmt: skip
        tier = str(tiers[t])
        llm = tier == "llm"
        for r in range(2 if second_reply[t] else 1):
            add(**common, event_id=uuid.uuid4().hex, direction="out", created_at=replied,
                text="Here is what I found.", tier=tier, latency_ms=float(latency[t]),
                provider="openai" if llm else None, model="gpt-4o-mini" if llm else None,
                prompt_tokens=120 if llm and r == 0 else None,
                completion_tokens=30 if llm and r == 0 else None,
                cost_usd=0.000036 if llm and r == 0 else None, flow_version=1)  # fmt: skip
    events: dict[str, list[Any]] = {name: [] for name in BRONZE_CONVERSATION_EVENTS.names}
    for c in range(conversations):
        kinds = [("conversation_started", {"flow_version": 1, "variant": None})]
        if c % 20 == 0:
            kinds.append(("handoff", {"variant": None}))
        if c % 5 == 0:
            kinds.append(("feedback", {"rating": int(c % 5 + 1)}))
        for kind, payload in kinds:
            for name, value in {
                "event_id": uuid.uuid4().hex, "event_type": kind,
                "tenant_id": tenant_ids[tenant_of[c]], "conversation_id": conv_ids[c],
                "user_id": users[c], "channel": "web", "payload": json.dumps(payload),
                "created_at": start + timedelta(seconds=conv_start[c]), "date": day,
            }.items():  # fmt: skip
                events[name].append(value)
    return (
        pa.Table.from_pydict(rows, schema=BRONZE_MESSAGES),
        pa.Table.from_pydict(events, schema=BRONZE_CONVERSATION_EVENTS),
    )


def write_bronze(lake_root: str, messages: pa.Table, events: pa.Table) -> None:
    for name, table in ((MESSAGES_TABLE, messages), (CONVERSATION_EVENTS_TABLE, events)):
        write_deltalake(table_uri(lake_root, name), table, mode="append", partition_by=PARTITION_BY)


def _pipeline_run(home: str, *args: str) -> tuple[dict[str, Any], float]:
    env = {**os.environ, "CHATLAKE_HOME": home}
    for name in ("CHATLAKE_LAKE_URI", "CHATLAKE_WAREHOUSE_PATH", "DBT_CHATLAKE_LAKE_ROOT",
                 "DBT_CHATLAKE_WAREHOUSE"):  # fmt: skip
        env.pop(name, None)  # the bench's own lake and warehouse, under its temporary home
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "chatlake", "pipeline", "run", "--no-retrain", "--no-bill", *args],
        capture_output=True, text=True, env=env, cwd=BENCH_DIR.parent, timeout=3600,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise ChatlakeError(f"pipeline run failed: {result.stdout[-2000:]}{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout)), elapsed


def _ceiling(lake_root: str) -> float:
    """Seconds for DuckDB to read bronze once and aggregate it per tenant and day."""
    from deltalake import DeltaTable

    started = time.perf_counter()
    dataset = arrow_dataset(DeltaTable(table_uri(lake_root, MESSAGES_TABLE)))
    connection = duckdb.connect()
    connection.register("bronze", dataset)
    connection.sql(
        "select tenant_id, date, count(*) filter (where direction = 'in'), "
        "count(distinct conversation_id), count(distinct user_id), "
        "quantile_cont(latency_ms, 0.95) from bronze group by all"
    ).fetchall()
    return time.perf_counter() - started


def generate_lake(
    lake_root: str, messages: int, tenants: int, days: int, rng: np.random.Generator
) -> tuple[list[str], int]:
    """`messages` over the `days` before today and `tenants` tenants, into bronze; the
    tenant ids and the bronze message rows written."""
    tenant_ids = [str(uuid.UUID(int=int(rng.integers(1, 2**62)) << 64 | i)) for i in range(tenants)]
    first = datetime.now(UTC).date() - timedelta(days=days)
    rows = 0
    for i in range(days):
        batch, events = generate_day(first + timedelta(days=i), messages // days, tenant_ids, rng)
        write_bronze(lake_root, batch, events)
        rows += batch.num_rows
    return tenant_ids, rows


def run(messages: int, tenants: int, days: int, out: str | None, seed: int = 7) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    today = datetime.now(UTC).date()
    with tempfile.TemporaryDirectory(prefix="chatlake-bench-pipeline-") as home:
        lake_root = str(Path(home) / "lake")
        started = time.perf_counter()
        tenant_ids, rows = generate_lake(lake_root, messages, tenants, days, rng)
        generated_s = time.perf_counter() - started
        full, full_wall = _pipeline_run(home)
        ceiling_s = min(_ceiling(lake_root) for _ in range(3))
        batch, events = generate_day(today, messages // days, tenant_ids, rng)
        write_bronze(lake_root, batch, events)
        day = today.isoformat()
        incremental, incremental_wall = _pipeline_run(home, "--from", day, "--to", day)
        warehouse = duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True)
        marts = {
            name: warehouse.execute(f"select count(*) from {name}").fetchall()[0][0]
            for name in ("fct_messages", "fct_conversations", "fct_tenant_daily",
                         "fct_intent_performance", "fct_model_usage")
        }  # fmt: skip
        warehouse.close()
    results: dict[str, Any] = {
        "benchmark": "pipeline",
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count()},
        "config": {"messages": messages, "tenants": tenants, "days": days, "seed": seed},
        "bronze_rows": rows,
        "generate_seconds": round(generated_s, 2),
        "full": {"days": full["days"], "run_seconds": full["seconds"],
                 "wall_seconds": round(full_wall, 2), "checks_passed": full["checks_passed"]},
        "incremental_day": {"day": day, "bronze_rows": batch.num_rows,
                            "run_seconds": incremental["seconds"],
                            "wall_seconds": round(incremental_wall, 2),
                            "checks_passed": incremental["checks_passed"]},
        "ceiling_duckdb_scan_seconds": round(ceiling_s, 3),
        "ceiling_vs_full_run": round(ceiling_s / full["seconds"], 4),
        "incremental_vs_full_run": round(incremental["seconds"] / full["seconds"], 3),
        "mart_rows": marts,
    }  # fmt: skip
    return write_results(results, out, "pipeline.json")
