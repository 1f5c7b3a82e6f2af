"""Billing: invoices from the marts, compared with usage counted here from bronze and
priced here by hand (a plan with overage); served per tenant by the API as JSON, CSV and
Stripe objects; a closed month is final, and recomputing it from the lake gives the same
invoice (and says so when late data would change it)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
import pytest

from bench.pipeline import generate_day, write_bronze
from chatlake.billing import DEFAULT_PLANS, BillingError, Plan, invoice_lines, month_days
from chatlake.db import owner_connection
from chatlake.settings import get_settings
from lake.readers import scan
from lake.schemas import MESSAGES_TABLE
from pipelines.billing import bill_month, recompute_month
from pipelines.run import run_billing, run_pipeline
from tests.utils.factories import create_tenant

TINY = {
    "currency": "usd", "monthly_fee": "19.99", "included_messages": 100,
    "message_price": "0.0035", "included_conversations": 10, "conversation_price": "0.015",
    "llm_markup": "1.25",
}  # fmt: skip
CENT = Decimal("0.01")
CHATLAKE = str(Path(sys.executable).parent / "chatlake")


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def expected_invoice(bronze: pl.DataFrame) -> dict[str, Decimal | int]:
    """The invoice's figures, computed here from one tenant's bronze rows of the month."""
    inbound = bronze.filter(direction="in")
    llm = bronze.filter(direction="out", provider="openai")
    messages, conversations = inbound.height, bronze["conversation_id"].n_unique()
    prompt, completion = int(llm["prompt_tokens"].sum()), int(llm["completion_tokens"].sum())
    # tiny: 100 messages and 10 conversations included; gpt-4o-mini at 0.15 / 0.60 USD per
    # million tokens, with a 25 % markup
    overage = money(Decimal("0.0035") * messages) - money(Decimal("0.0035") * min(messages, 100))
    overage += money(Decimal("0.015") * conversations) - money(
        Decimal("0.015") * min(conversations, 10)
    )
    tokens = money(Decimal(prompt) * Decimal("0.15") * Decimal("1.25") / 1_000_000) + money(
        Decimal(completion) * Decimal("0.6") * Decimal("1.25") / 1_000_000
    )
    return {"messages": messages, "conversations": conversations, "prompt": prompt,
            "completion": completion, "total": Decimal("19.99") + overage + tokens}  # fmt: skip


def test_prices_are_exact_and_lines_add_up():
    from chatlake.billing import TokenUsage, Usage, price_snapshot

    usage = Usage(12_345, 2_500, (TokenUsage("openai", "gpt-4o-mini", "llm", 1_000_001, 7),))
    snapshot = price_snapshot(Plan(**TINY), {"gpt-4o-mini": (0.15, 0.6)}, usage)
    lines = {line.item: line for line in invoice_lines(usage, snapshot)}
    assert lines["messages"].quantity == 12_345 and lines["messages"].amount == Decimal("43.21")
    assert lines["messages_included"].amount == Decimal("-0.35")
    prompt = lines["llm_prompt_tokens:openai/gpt-4o-mini"]
    assert prompt.unit_amount == Decimal("0.0000001875")  # 0.15 x 1.25 / 1e6, exactly
    assert prompt.amount == Decimal("0.19")  # 0.1875001875 rounds half-up
    for line in lines.values():
        assert money(line.quantity * line.unit_amount) == line.amount
    # exports write plain decimals, never exponent forms like 1.875E-7
    from chatlake.billing import decimal_text, invoices_csv

    assert decimal_text(prompt.unit_amount) == "0.0000001875"
    invoice = {"invoice_id": "in_x", "tenant_id": "t", "month": "2026-11", "status": "draft",
               "currency": "usd", "lines": [ln.public() for ln in lines.values()]}  # fmt: skip
    assert "E-" not in invoices_csv([invoice]) and "0.0000001875" in invoices_csv([invoice])
    with pytest.raises(ValueError):
        Plan(**{**TINY, "monthly_fee": "1.005"})  # no fractions of a cent in a fee


def _plans(**extra: dict) -> dict:
    """The default plans (every other tenant of the session is on one) and `extra`."""
    return {**{n: p.model_dump(mode="json") for n, p in DEFAULT_PLANS.items()}, **extra}


@pytest.fixture
def tiny_plan(monkeypatch):
    monkeypatch.setenv("CHATLAKE_BILLING_PLANS", json.dumps(_plans(tiny=TINY)))
    monkeypatch.setenv("CHATLAKE_LLM_PRICES", json.dumps({"gpt-4o-mini": [0.15, 0.6]}))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _on_plan(endpoints, tenant_id: str, plan: str) -> None:
    with owner_connection(endpoints.database_url) as conn:
        conn.execute("update tenants set plan = %s where tenant_id = %s", (plan, tenant_id))


@pytest.fixture
def on_tiny(endpoints):
    """Puts tenants on the tiny plan; back on `free` afterwards (tiny exists only in this
    module's configuration, and later billing runs bill every tenant)."""
    moved: list[str] = []

    def move(tenant_id: str) -> None:
        _on_plan(endpoints, tenant_id, "tiny")
        moved.append(tenant_id)

    yield move
    for tenant_id in moved:
        _on_plan(endpoints, tenant_id, "free")


def test_invoices_match_usage_counted_from_bronze_and_a_closed_month_stays(
    client, admin_headers, own_lake, tiny_plan, on_tiny, endpoints
):
    settings = get_settings()
    assert settings.lake_root == own_lake.lake_root
    first = (datetime.now(UTC).date().replace(day=1) - timedelta(days=40)).replace(day=1)
    last = month_days(first)[1]
    busy, quiet = create_tenant(client, admin_headers), create_tenant(client, admin_headers)
    for tenant in (busy, quiet):
        on_tiny(tenant.tenant_id)
    rng = np.random.default_rng(5)
    days = [first, first + timedelta(days=9), last]
    for day in days:  # the busy tenant goes over its plan; the quiet one stays within
        write_bronze(settings.lake_root, *generate_day(day, 400, [busy.tenant_id], rng))
    write_bronze(settings.lake_root, *generate_day(days[1], 24, [quiet.tenant_id], rng))
    after = last + timedelta(days=1)  # the next month's data is not this month's
    write_bronze(settings.lake_root, *generate_day(after, 60, [busy.tenant_id], rng))

    result = run_pipeline(settings, first, after, bill=True)
    assert result["success"], result
    assert result["billing"]["success"] and first.strftime("%Y-%m") in result["billing"]["months"]

    month = first.strftime("%Y-%m")
    invoices = {}
    for tenant in (busy, quiet):
        answer = client.get(f"/v1/billing/invoices?month={month}", headers=tenant.headers)
        assert answer.status_code == 200, answer.text
        body = json.loads(answer.text, parse_float=Decimal)
        assert len(body["invoices"]) == 1
        invoice = invoices[tenant.tenant_id] = body["invoices"][0]
        bronze = scan(settings.lake_root, MESSAGES_TABLE, tenant.tenant_id).collect()
        bronze = bronze.filter(pl.col("created_at").dt.date().is_between(first, last))
        expected = expected_invoice(bronze)
        lines = {line["item"]: line for line in invoice["lines"]}
        assert invoice["month"] == month and invoice["status"] == "draft"
        assert invoice["currency"] == "usd" and invoice["plan"] == "tiny"
        assert lines["messages"]["quantity"] == expected["messages"]
        assert lines["conversations"]["quantity"] == expected["conversations"]
        assert lines["llm_prompt_tokens:openai/gpt-4o-mini"]["quantity"] == expected["prompt"]
        assert invoice["total"] == expected["total"]
        assert sum(line["amount"] for line in invoice["lines"]) == invoice["total"]
        for line in invoice["lines"]:
            assert money(line["quantity"] * line["unit_amount"]) == line["amount"]
    busy_invoice, quiet_invoice = invoices[busy.tenant_id], invoices[quiet.tenant_id]
    busy_lines = {line["item"]: line for line in busy_invoice["lines"]}
    assert busy_lines["messages"]["quantity"] > 100  # overage billed
    assert busy_invoice["total"] > Decimal("19.99")
    quiet_lines = {line["item"]: line for line in quiet_invoice["lines"]}
    assert quiet_lines["messages"]["quantity"] <= 100
    assert quiet_invoice["total"] == Decimal("19.99") + sum(
        (v["amount"] for k, v in quiet_lines.items() if k.startswith("llm_")), Decimal(0)
    )

    # each tenant sees its own invoices only; another's is a 404
    other = client.get(f"/v1/billing/invoices/{busy_invoice['invoice_id']}", headers=quiet.headers)
    assert other.status_code == 404
    assert client.get("/v1/billing/invoices?month=2026-13", headers=busy.headers).status_code == 422

    # exports: CSV a row per line, Stripe objects in cents
    exported = client.get(f"/v1/billing/invoices?month={month}&format=csv", headers=busy.headers)
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["item"] for r in rows] == [line["item"] for line in busy_invoice["lines"]]
    assert sum(Decimal(r["amount"]) for r in rows) == busy_invoice["total"]
    stripe = client.get(
        f"/v1/billing/invoices/{busy_invoice['invoice_id']}?format=stripe", headers=busy.headers
    ).json()
    assert stripe["object"] == "invoice" and stripe["status"] == "draft"
    assert stripe["total"] == int(busy_invoice["total"] * 100)
    assert sum(line["amount"] for line in stripe["lines"]["data"]) == stripe["total"]

    # closing: final, audited; this month cannot close before it is over
    with pytest.raises(BillingError, match="not over"):
        bill_month(settings, datetime.now(UTC).date().replace(day=1), close=True)
    closed = run_billing(settings, [first], close=True)
    assert closed["success"] and closed.get("finalized", 0) >= 2
    final = client.get(f"/v1/billing/invoices?month={month}", headers=busy.headers)
    final_invoice = json.loads(final.text, parse_float=Decimal)["invoices"][0]
    assert final_invoice["status"] == "final"
    assert final_invoice["lines"] == busy_invoice["lines"]
    audit = client.get("/v1/audit-log", headers=busy.headers).json()["entries"]
    assert any(e["action"] == "billing.invoice_finalized" for e in audit)
    for statement in ("update invoices set total = 0 where invoice_id = %s",
                      "delete from invoice_lines where invoice_id = %s"):  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is final"):
            with owner_connection(endpoints.database_url) as conn:  # not even the owner
                conn.execute(statement, (final_invoice["invoice_id"],))

    # recomputed from the lake (the warehouse dropped and rebuilt) under a changed price
    # list: the same invoice, since it keeps the prices it was computed with
    monkey_plans = _plans(tiny={**TINY, "message_price": "0.5"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHATLAKE_BILLING_PLANS", json.dumps(monkey_plans))
        get_settings.cache_clear()
        settings = get_settings()
        settings.warehouse.unlink()
        done = subprocess.run(
            [CHATLAKE, "billing", "recompute", "--month", month],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout)
        assert report["rebuild"]["success"] and report["rebuild"]["days"] == [
            first.isoformat(), last.isoformat()]  # fmt: skip
        checked = {r["tenant_id"]: r for r in report["invoices"]}
        assert checked[busy.tenant_id]["matches"] and checked[quiet.tenant_id]["matches"]
        assert Decimal(checked[busy.tenant_id]["recomputed_total"]) == final_invoice["total"]
        # a later run leaves the final invoice alone
        again = {o["tenant_id"]: o for o in bill_month(settings, first)}
        assert again[busy.tenant_id]["outcome"] == "unchanged"

        # late data for the closed month: the stored invoice stays, the check says so
        write_bronze(settings.lake_root, *generate_day(days[1], 40, [busy.tenant_id], rng))
        assert run_pipeline(settings, days[1], days[1])["success"]
        checked = {r["tenant_id"]: r for r in recompute_month(settings, first)}
        assert not checked[busy.tenant_id]["matches"] and checked[quiet.tenant_id]["matches"]
        again = {o["tenant_id"]: o for o in bill_month(settings, first)}
        assert again[busy.tenant_id]["outcome"] == "differs"
    get_settings.cache_clear()
    still = client.get(f"/v1/billing/invoices?month={month}", headers=busy.headers)
    assert json.loads(still.text, parse_float=Decimal)["invoices"][0] == final_invoice


def test_plans_are_validated(client, admin_headers):
    answer = client.post(
        "/v1/tenants", json={"name": "planned", "plan": "platinum"}, headers=admin_headers
    )
    assert answer.status_code == 422 and "starter" in answer.json()["error"]["message"]
    tenant = create_tenant(client, admin_headers)
    assert client.get("/v1/tenant", headers=tenant.headers).json()["plan"] == "free"
    answer = client.patch(
        f"/v1/tenants/{tenant.tenant_id}", json={"plan": "starter"}, headers=admin_headers
    )
    assert answer.status_code == 200 and answer.json()["plan"] == "starter"
    bad = client.patch(
        f"/v1/tenants/{tenant.tenant_id}", json={"plan": "nope"}, headers=admin_headers
    )
    assert bad.status_code == 422
    assert client.get("/v1/billing/invoices", headers=tenant.headers).json() == {"invoices": []}


def test_a_tenant_on_a_plan_no_longer_configured_fails_alone(client, admin_headers, endpoints):
    settings = get_settings()
    lost, fine = create_tenant(client, admin_headers), create_tenant(client, admin_headers)
    _on_plan(endpoints, lost.tenant_id, "retired")
    try:
        month = datetime.now(UTC).date().replace(day=1)
        outcomes = {o["tenant_id"]: o for o in bill_month(settings, month)}
        assert outcomes[lost.tenant_id]["outcome"] == "failed"
        assert "'retired', which is not configured" in outcomes[lost.tenant_id]["reason"]
        assert outcomes[fine.tenant_id]["outcome"] == "drafted"
        run = run_billing(settings, [month])
        assert not run["success"] and "could not be billed" in run["error"]
    finally:
        _on_plan(endpoints, lost.tenant_id, "free")


def test_months_are_parsed_strictly():
    from chatlake.billing import parse_month

    assert parse_month("2026-02") == date(2026, 2, 1)
    for bad in ("2026-2-1", "2026-13", "26-01", "", "2026/01"):
        with pytest.raises(BillingError):
            parse_month(bad)
