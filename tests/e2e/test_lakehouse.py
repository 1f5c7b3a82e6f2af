"""The lakehouse end to end: conversations through the real API, the ingest worker into
bronze, every asset materialized in-process (silver, dbt, checks), and the marts checked
against figures computed here, independently, from the raw bronze events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import duckdb
import numpy as np
import polars as pl
import pytest
from deltalake import DeltaTable

from bench.pipeline import generate_day, write_bronze
from lake.readers import scan
from lake.schemas import CONVERSATION_EVENTS_TABLE, MESSAGES_TABLE
from pipelines.run import run_pipeline
from tests.integration.test_ingest import run_ingest
from tests.utils.factories import create_tenant
from tests.utils.loopback import ScriptedServer, chat_completion


def converse(client, tenant, user: str, texts: list[str]) -> None:
    conversation = None
    for text in texts:
        body = {"user_id": user, "text": text}
        if conversation:
            body["conversation_id"] = conversation
        response = client.post("/v1/messages", json=body, headers=tenant.headers)
        assert response.status_code == 200, response.text
        conversation = response.json()["conversation_id"]


def expected_daily(lake_root: str, tenant_id: str) -> dict[str, object]:
    """fct_tenant_daily's figures for one tenant (one day of data), from bronze alone."""
    rows = scan(lake_root, MESSAGES_TABLE, tenant_id).collect().sort("created_at")
    events = scan(lake_root, CONVERSATION_EVENTS_TABLE, tenant_id).collect()
    inbound, outbound = rows.filter(direction="in"), rows.filter(direction="out")
    # one latency per turn: the replies of a turn share its timestamp and its latency
    turns = outbound.group_by("conversation_id", "created_at").agg(pl.col("latency_ms").first())
    escalated = set(events.filter(event_type="handoff")["conversation_id"])
    statuses = []
    for conversation in rows["conversation_id"].unique():
        replies = outbound.filter(conversation_id=conversation)
        if conversation in escalated:
            statuses.append("escalated")
        elif replies.height and replies["tier"][-1] == "rules":
            statuses.append("abandoned")
        else:
            statuses.append("completed")
    latencies = turns["latency_ms"].to_numpy()
    return {
        "messages_in": inbound.height,
        "messages_out": outbound.height,
        "conversations": rows["conversation_id"].n_unique(),
        "active_users": inbound["user_id"].n_unique(),
        "conversations_started": len(statuses),
        "completion_rate": statuses.count("completed") / len(statuses),
        "escalation_rate": statuses.count("escalated") / len(statuses),
        "fallback_rate": outbound.filter(tier="rules").height / outbound.height,
        "latency_p50_ms": float(np.percentile(latencies, 50)),
        "latency_p95_ms": float(np.percentile(latencies, 95)),
        "cost_usd": float(outbound["cost_usd"].fill_null(0).sum()),
        "prompt_tokens": int(outbound["prompt_tokens"].fill_null(0).sum()),
    }


@pytest.fixture
def provider():
    server = ScriptedServer()
    server.default = (200, chat_completion("A model's answer."), {})
    yield server
    server.close()


def test_the_marts_match_the_raw_events(
    client, admin_headers, settings, home, provider, monkeypatch
):
    monkeypatch.setitem(client.app.state.platform.replies.prices, "tiny-llm", (1.0, 2.0))
    with_llm = create_tenant(client, admin_headers, name="lakehouse-llm")
    chain = {"tiers": [{"provider": "openai_compatible", "model": "tiny-llm",
                        "base_url": provider.url + "/v1"}]}  # fmt: skip
    assert client.put("/v1/model-chain", json=chain, headers=with_llm.headers).status_code == 200
    plain = create_tenant(client, admin_headers, name="lakehouse-plain")
    converse(client, with_llm, "ana@example.com", ["hello", "zxqv tell me something odd"])
    converse(client, with_llm, "ben", ["hi", "where is my order?", "12345"])
    converse(client, with_llm, "ana@example.com", ["zxqv another odd one", "thanks"])
    converse(client, plain, "cy", ["hello", "I want to talk to a human", "are you there?"])
    converse(client, plain, "dee", ["my email is dee@example.org", "zxqv wibble"])
    converse(client, plain, "eve", ["zxqv blorp"])
    assert run_ingest(home, f"lakehouse-{uuid4().hex[:6]}").returncode == 0

    result = run_pipeline(settings)
    assert result["success"], result
    assert result["checks_failed"] == [] and result["checks_passed"] > 30
    assert {"silver/turns", "fct_tenant_daily", "fct_conversations"} <= set(result["materialized"])

    warehouse = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        for tenant in (with_llm, plain):
            expected = expected_daily(settings.lake_root, tenant.tenant_id)
            row = warehouse.execute(
                "select * from fct_tenant_daily where tenant_id = ?", [tenant.tenant_id]
            ).df()
            assert len(row) == 1  # all of this test's traffic is on one day
            actual = row.iloc[0].to_dict()
            for name, value in expected.items():
                assert actual[name] == pytest.approx(value), name
            assert actual["csat"] is None or np.isnan(actual["csat"])  # nobody rated
        statuses = dict(
            warehouse.execute(
                "select status, count(*) from fct_conversations where tenant_id = ? group by 1",
                [plain.tenant_id],
            ).fetchall()
        )
        assert statuses == {"escalated": 1, "abandoned": 2}
        usage = warehouse.execute(
            "select tier, provider, model, turns, cost_usd from fct_model_usage "
            "where tenant_id = ? and tier = 'llm'", [with_llm.tenant_id],
        ).fetchall()  # fmt: skip
        llm_turns = (
            scan(settings.lake_root, MESSAGES_TABLE, with_llm.tenant_id)
            .filter(tier="llm").select("conversation_id", "created_at").unique().collect().height
        )  # fmt: skip
        assert llm_turns >= 2  # the two odd questions at least
        # 12 prompt and 5 completion tokens a call, at 1 and 2 USD per million
        assert usage[0][:4] == ("llm", "openai_compatible", "tiny-llm", llm_turns)
        assert usage[0][4] == pytest.approx(llm_turns * 22e-6)
        texts = [
            r[0]
            for r in warehouse.execute(
                "select text from fct_messages where tenant_id = ?", [plain.tenant_id]
            ).fetchall()
        ]
        assert "my email is [EMAIL]" in texts and not any("dee@example.org" in t for t in texts)
        keys = warehouse.execute(
            "select distinct user_key from fct_messages where tenant_id = ?", [with_llm.tenant_id]
        ).fetchall()
        assert len(keys) == 2 and all(len(k[0]) == 32 and "@" not in k[0] for k in keys)
    finally:
        warehouse.close()

    # dbt on its own, as a data engineer runs it from the repository (no network needed)
    dbt_dir = Path(__file__).resolve().parents[2] / "dbt"
    built = subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), "build", "--project-dir", str(dbt_dir),
         "--profiles-dir", str(dbt_dir)],
        capture_output=True, text=True, env={**os.environ, "CHATLAKE_HOME": home}, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:]
    assert "ERROR=0" in built.stdout and "PASS=" in built.stdout


def test_a_new_day_does_not_rebuild_history(settings, home):
    lake = settings.lake_root
    tenant_id = str(uuid4())
    rng = np.random.default_rng(11)
    today = datetime.now(UTC).date()
    old, new = today - timedelta(days=30), today - timedelta(days=29)
    write_bronze(lake, *generate_day(old, 400, [tenant_id], rng))
    assert run_pipeline(settings, old, old)["success"]
    before = _daily_row(settings, tenant_id, old)
    old_files = _silver_files(lake, old)

    write_bronze(lake, *generate_day(new, 400, [tenant_id], rng))
    result = run_pipeline(settings, new, new)
    assert result["success"] and result["days"] == [new.isoformat(), new.isoformat()]
    assert _daily_row(settings, tenant_id, old) == before  # history untouched
    assert _silver_files(lake, old) == old_files  # not even rewritten
    assert _daily_row(settings, tenant_id, new)["messages_in"] > 0
    last = DeltaTable(f"{lake}/silver/turns").history(1)[0]
    assert new.isoformat() in json.dumps(last.get("operationParameters"))
    assert old.isoformat() not in json.dumps(last.get("operationParameters"))


def _daily_row(settings, tenant_id: str, day: date) -> dict[str, object]:
    with duckdb.connect(str(settings.warehouse), read_only=True) as warehouse:
        frame = warehouse.execute(
            "select * from fct_tenant_daily where tenant_id = ? and day = ?", [tenant_id, day]
        ).df()
    assert len(frame) == 1
    return frame.iloc[0].to_dict()


def _silver_files(lake: str, day: date) -> set[str]:
    table = DeltaTable(f"{lake}/silver/turns")
    return {uri for uri in table.file_uris() if f"date={day.isoformat()}" in uri}
