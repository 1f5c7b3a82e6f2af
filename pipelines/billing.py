"""Monthly invoices from the marts: each tenant's usage (end users' messages, conversations
started, LLM tokens by provider and model) priced under its plan (chatlake/billing.py),
written to PostgreSQL with its line items, where `GET /v1/billing/invoices` reads them.

A month's invoice is a draft until the month is closed; every run before that rewrites the
draft from the marts. Closing finalizes it: later runs leave it as it is and only say
whether a recomputation still gives the same lines. Each invoice keeps the prices it was
computed with (the plan and the token prices), so recomputing a month prices it the same
way whatever the configuration says today; the usage comes from the marts, which the
pipeline rebuilds from the lake.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

from chatlake.billing import (
    BillingError,
    Line,
    TokenUsage,
    Usage,
    invoice_lines,
    month_days,
    month_label,
    price_snapshot,
    total,
)
from chatlake.db import owner_connection, tenant_connection
from chatlake.settings import Settings
from chatlake.warehouse import has_table, read_warehouse

log = logging.getLogger(__name__)


def month_usage(settings: Settings, month: date) -> dict[str, Usage]:
    """Each tenant's usage in `month`, from fct_tenant_daily and fct_model_usage."""
    first, last = month_days(month)
    conn = read_warehouse(settings)
    if conn is None:
        return {}
    try:
        if not has_table(conn, "fct_tenant_daily"):
            return {}
        volume = conn.execute(
            """select tenant_id, sum(messages_in)::bigint, sum(conversations_started)::bigint
               from fct_tenant_daily where day between ? and ? group by 1""",
            [first, last],
        ).fetchall()
        tokens = conn.execute(
            """select tenant_id, provider, model, tier, sum(prompt_tokens)::bigint,
                      sum(completion_tokens)::bigint
               from fct_model_usage
               where day between ? and ? and provider <> '-'
               group by 1, 2, 3, 4
               having sum(prompt_tokens) + sum(completion_tokens) > 0
               order by 1, 2, 3, 4""",
            [first, last],
        ).fetchall()
    finally:
        conn.close()
    llm: dict[str, list[TokenUsage]] = {}
    for tenant, provider, model, tier, prompt, completion in tokens:
        llm.setdefault(tenant, []).append(
            TokenUsage(provider, model, tier, int(prompt), int(completion))
        )
    usage = {tenant: Usage(int(m), int(c), tuple(llm.get(tenant, ()))) for tenant, m, c in volume}
    for tenant in llm.keys() - usage.keys():
        usage[tenant] = Usage(0, 0, tuple(llm[tenant]))
    return usage


def month_is_over(month: date, today: date | None = None) -> bool:
    return month_days(month)[1] < (today or datetime.now(UTC).date())


def _billable_tenants(settings: Settings, month: date, used: list[str]) -> dict[str, str]:
    """tenant → plan, for every tenant that existed by the month's end or has usage in it
    (history imported into the lake)."""
    from chatlake.embedded import Services

    last = month_days(month)[1] + timedelta(days=1)
    with owner_connection(Services(settings).endpoints().database_url) as conn:
        rows = conn.execute(
            """select tenant_id::text as t, plan from tenants
               where created_at < %s or tenant_id::text = any(%s) order by 1""",
            (datetime(last.year, last.month, last.day, tzinfo=UTC), used),
        ).fetchall()
    return {row["t"]: row["plan"] for row in rows}


def _stored_lines(conn: Any, invoice_id: str) -> list[dict[str, Any]]:
    return list(
        conn.execute(
            """select item, description, quantity, unit_amount, amount, metadata
               from invoice_lines where invoice_id = %s order by line_no""",
            (invoice_id,),
        ).fetchall()
    )


def same_lines(stored: list[dict[str, Any]], computed: list[Line]) -> bool:
    """Line for line the same items, quantities and money (exact decimal comparison)."""
    key = [(r["item"], int(r["quantity"]), r["unit_amount"], r["amount"]) for r in stored]
    return key == [(c.item, c.quantity, c.unit_amount, c.amount) for c in computed]


def bill_month(
    settings: Settings, month: date, close: bool = False, today: date | None = None
) -> list[dict[str, Any]]:
    """Bring every tenant's invoice for `month` up to date (a draft), or finalize it with
    `close` (only once the month is over). Final invoices are never rewritten: for them
    the outcome says whether today's marts still give the same lines."""
    from chatlake.embedded import Services

    if close and not month_is_over(month, today):
        raise BillingError(
            f"{month_label(month)} is not over yet; a month closes after its last day"
        )
    usage = month_usage(settings, month)
    url = Services(settings).endpoints().app_database_url
    outcomes = []
    for tenant, plan_name in _billable_tenants(settings, month, list(usage)).items():
        used = usage.get(tenant, Usage(0, 0))
        try:
            with tenant_connection(url, tenant) as conn:
                outcomes.append(_bill_tenant(settings, conn, tenant, plan_name, month, used, close))
        except BillingError as exc:  # one tenant's problem must not hold up the others
            outcomes.append({"tenant_id": tenant, "month": month_label(month),
                             "outcome": "failed", "reason": str(exc)})  # fmt: skip
    return outcomes


def _bill_tenant(
    settings: Settings,
    conn: Any,
    tenant: str,
    plan_name: str,
    month: date,
    usage: Usage,
    close: bool,
) -> dict[str, Any]:
    from psycopg.types.json import Jsonb

    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"invoice:{tenant}:{month}",))
    row = conn.execute(
        "select invoice_id, status, prices from invoices where month = %s", (month,)
    ).fetchone()
    label = month_label(month)
    if row is not None and row["status"] == "final":
        computed = invoice_lines(usage, row["prices"])
        matches = same_lines(_stored_lines(conn, row["invoice_id"]), computed)
        return {"tenant_id": tenant, "invoice_id": row["invoice_id"], "month": label,
                "status": "final", "outcome": "unchanged" if matches else "differs",
                "total": str(total(computed))}  # fmt: skip
    plan = settings.billing_plans.get(plan_name)
    if plan is None:
        raise BillingError(f"tenant {tenant} is on plan {plan_name!r}, which is not configured")
    prices = price_snapshot(plan, settings.llm_prices, usage)
    lines = invoice_lines(usage, prices)
    status = "final" if close else "draft"
    invoice_id = row["invoice_id"] if row else f"in_{uuid4().hex[:24]}"
    # the draft and its lines first; a final invoice (and its lines) cannot change after
    conn.execute(
        """insert into invoices (invoice_id, tenant_id, month, plan, currency, status, usage,
                                 prices, total, computed_at)
           values (%s, %s, %s, %s, %s, 'draft', %s, %s, %s, now())
           on conflict (tenant_id, month) do update set
             plan = excluded.plan, currency = excluded.currency, usage = excluded.usage,
             prices = excluded.prices, total = excluded.total, computed_at = now()
           where invoices.status = 'draft'""",
        (invoice_id, tenant, month, plan_name, plan.currency, Jsonb(usage.public()),
         Jsonb(prices), total(lines)),
    )  # fmt: skip
    conn.execute("delete from invoice_lines where invoice_id = %s", (invoice_id,))
    with conn.cursor() as cur:
        cur.executemany(
            """insert into invoice_lines (invoice_id, tenant_id, line_no, item, description,
                                          quantity, unit_amount, amount, metadata)
               values (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [(invoice_id, tenant, n, line.item, line.description, line.quantity,
              line.unit_amount, line.amount, Jsonb(line.metadata))
             for n, line in enumerate(lines, start=1)],
        )  # fmt: skip
    if close:
        conn.execute(
            "update invoices set status = 'final', finalized_at = now() where invoice_id = %s",
            (invoice_id,),
        )
        conn.execute(
            """insert into audit_log (tenant_id, actor, action, target, detail)
               values (%s, 'billing', 'billing.invoice_finalized', %s, %s)""",
            (tenant, invoice_id, Jsonb({"month": label, "total": str(total(lines))})),
        )
    outcome: dict[str, Any] = {
        "tenant_id": tenant, "invoice_id": invoice_id, "month": label, "status": status,
        "outcome": "finalized" if close else "drafted", "total": str(total(lines)),
    }  # fmt: skip
    unpriced = sorted({t.model for t in usage.llm} - set(prices["llm_prices"]))
    if unpriced:  # billed at 0: say so (CHATLAKE_LLM_PRICES lacks them)
        log.warning("tenant %s: no price for %s in CHATLAKE_LLM_PRICES", tenant, unpriced)
        outcome["unpriced_models"] = unpriced
    return outcome


def recompute_month(settings: Settings, month: date) -> list[dict[str, Any]]:
    """Each stored invoice of `month` against what today's marts give under the prices
    it was computed with; nothing is written."""
    from chatlake.embedded import Services

    usage = month_usage(settings, month)
    url = Services(settings).endpoints().app_database_url
    results = []
    for tenant in _billable_tenants(settings, month, list(usage)):
        with tenant_connection(url, tenant) as conn:
            row = conn.execute(
                "select invoice_id, status, prices, total from invoices where month = %s",
                (month,),
            ).fetchone()
            if row is None:
                continue
            computed = invoice_lines(usage.get(tenant, Usage(0, 0)), row["prices"])
            stored = _stored_lines(conn, row["invoice_id"])
        results.append({
            "tenant_id": tenant, "invoice_id": row["invoice_id"], "status": row["status"],
            "stored_total": str(row["total"]), "recomputed_total": str(total(computed)),
            "matches": same_lines(stored, computed),
        })  # fmt: skip
    return results


def months_between(first: date, last: date) -> list[date]:
    months, month = [], first.replace(day=1)
    while month <= last:
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return months


def month_stretches(months: list[date]) -> list[tuple[date, date]]:
    """Months (first days) grouped into (first, last) stretches without a gap."""
    stretches: list[tuple[date, date]] = []
    for month in sorted(set(months)):
        if stretches and months_between(stretches[-1][1], month)[1:] == [month]:
            stretches[-1] = (stretches[-1][0], month)
        else:
            stretches.append((month, month))
    return stretches
