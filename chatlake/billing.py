"""Plans, and the invoice a month of usage comes to under a plan: exact decimal money.

A plan (in configuration, `CHATLAKE_BILLING_PLANS`) has a monthly fee, an included volume
of end users' messages and of conversations with a price per unit beyond it, and a markup
on the LLM tokens the fallback chain spent (priced by `CHATLAKE_LLM_PRICES`). An invoice's
lines each read `quantity x unit_amount = amount` (amounts rounded half-up to the cent):
the `messages` line counts every end-user message of the month, and the plan's included
volume is a credit line beside it (`messages_included`, a negative unit amount), the way
a Stripe invoice shows a credit. Nothing here touches a float: quantities are integers,
prices `Decimal`.
"""

from __future__ import annotations

import csv
import io
from calendar import monthrange
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatlake.errors import ChatlakeError

CENT = Decimal("0.01")
PER_MILLION = Decimal(1_000_000)
# currencies a plan may bill in: all with cents (amounts are rounded to 0.01)
MINOR_UNITS = {"usd": 100, "eur": 100, "gbp": 100, "chf": 100, "cad": 100, "aud": 100}


class Plan(BaseModel):
    """What a tenant pays: a monthly fee, included volumes, the price of each unit beyond
    them, and the markup on LLM tokens (1 = the providers' list price)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # LLM token prices (CHATLAKE_LLM_PRICES) are in USD: a plan in another currency
    # carries the exchange rate in its llm_markup
    currency: Literal["usd", "eur", "gbp", "chf", "cad", "aud"] = "usd"
    monthly_fee: Decimal = Field(default=Decimal("0"), ge=0, decimal_places=2)
    included_messages: int = Field(default=0, ge=0)
    message_price: Decimal = Field(default=Decimal("0"), ge=0, decimal_places=6)
    included_conversations: int = Field(default=0, ge=0)
    conversation_price: Decimal = Field(default=Decimal("0"), ge=0, decimal_places=6)
    llm_markup: Decimal = Field(default=Decimal("1"), ge=0, decimal_places=4)


DEFAULT_PLANS: dict[str, Plan] = {
    "free": Plan(
        monthly_fee=Decimal("0"), included_messages=1_000, message_price=Decimal("0.01"),
        included_conversations=200, conversation_price=Decimal("0.05"),
        llm_markup=Decimal("1"),
    ),
    "starter": Plan(
        monthly_fee=Decimal("49.00"), included_messages=10_000, message_price=Decimal("0.004"),
        included_conversations=2_000, conversation_price=Decimal("0.02"),
        llm_markup=Decimal("1.10"),
    ),
    "business": Plan(
        monthly_fee=Decimal("499.00"), included_messages=150_000,
        message_price=Decimal("0.002"), included_conversations=30_000,
        conversation_price=Decimal("0.01"), llm_markup=Decimal("1.05"),
    ),
}  # fmt: skip


class BillingError(ChatlakeError):
    pass


def known_plan(plans: dict[str, Plan], name: str) -> str:
    """`name` if it is a configured plan; a clear error naming the plans otherwise."""
    if name not in plans:
        raise BillingError(f"no plan {name!r}; the plans are {', '.join(sorted(plans))}")
    return name


def parse_month(text: str) -> date:
    """`YYYY-MM` → the month's first day; a clear error otherwise."""
    try:
        parsed = datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise BillingError(f"month {text!r} is not YYYY-MM") from None
    if not 2000 <= parsed.year <= 9999:
        raise BillingError(f"month {text!r} is out of range")
    return parsed


def month_days(month: date) -> tuple[date, date]:
    """The first and last day of `month`."""
    return month.replace(day=1), month.replace(day=monthrange(month.year, month.month)[1])


def month_label(month: date) -> str:
    return month.strftime("%Y-%m")


@dataclass(frozen=True)
class TokenUsage:
    """LLM tokens of one provider and model in a month (the chain's `llm` tier)."""

    provider: str
    model: str
    tier: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Usage:
    """A tenant's month, from the marts."""

    messages: int
    conversations: int
    llm: tuple[TokenUsage, ...] = ()

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Line:
    item: str
    description: str
    quantity: int
    unit_amount: Decimal
    amount: Decimal
    metadata: dict[str, str] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"item": self.item, "description": self.description,
                "quantity": self.quantity, "unit_amount": self.unit_amount,
                "amount": self.amount, "metadata": self.metadata}  # fmt: skip


def plain(value: Decimal) -> Decimal:
    """`value` without trailing zeros (0.004, 49, 100 rather than 1E+2); as text, see
    `decimal_text`."""
    value = value.normalize()
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value + 0  # type: ignore[operator]


def decimal_text(value: Decimal | str) -> str:
    """Exact decimal text without exponent form: 0.000000165, never 1.65E-7."""
    return format(plain(Decimal(value)), "f")


def _line(item: str, description: str, quantity: int, unit: Decimal, **metadata: str) -> Line:
    amount = (unit * quantity).quantize(CENT, rounding=ROUND_HALF_UP)
    return Line(item, description, quantity, plain(unit), amount, metadata)


def _metered(
    lines: list[Line], item: str, noun: str, used: int, included: int, price: Decimal
) -> None:
    lines.append(_line(item, f"{noun.capitalize()} ({used:,})", used, price))
    credited = min(used, included)
    if credited and price:
        lines.append(_line(f"{item}_included", f"{noun.capitalize()} included in the plan "
                           f"({credited:,} of {included:,})", credited, -price))  # fmt: skip


def price_snapshot(
    plan: Plan, llm_prices: dict[str, tuple[float, float]], usage: Usage
) -> dict[str, Any]:
    """The plan and the per-million token prices of the models used: what an invoice was
    priced with, stored beside it so that a recomputation prices it the same way."""
    models = sorted({t.model for t in usage.llm})
    return {
        "plan": plan.model_dump(mode="json"),
        "llm_prices": {m: [str(p) for p in llm_prices[m]] for m in models if m in llm_prices},
    }


def invoice_lines(usage: Usage, snapshot: dict[str, Any]) -> list[Line]:
    """The lines `usage` comes to under a price snapshot (see `price_snapshot`)."""
    plan = Plan.model_validate(snapshot["plan"])
    prices = {m: (Decimal(p), Decimal(c)) for m, (p, c) in snapshot["llm_prices"].items()}
    lines = [_line("platform_fee", "Platform fee", 1, plan.monthly_fee)]
    _metered(lines, "messages", "end-user messages", usage.messages,
             plan.included_messages, plan.message_price)  # fmt: skip
    _metered(lines, "conversations", "conversations", usage.conversations,
             plan.included_conversations, plan.conversation_price)  # fmt: skip
    for tokens in sorted(usage.llm, key=lambda t: (t.provider, t.model)):
        per_prompt, per_completion = prices.get(tokens.model, (Decimal(0), Decimal(0)))
        where = f"{tokens.provider}/{tokens.model}"
        meta = {"provider": tokens.provider, "model": tokens.model, "tier": tokens.tier}
        kinds = (("prompt", tokens.prompt_tokens, per_prompt),
                 ("completion", tokens.completion_tokens, per_completion))  # fmt: skip
        for kind, count, price in kinds:
            if count:
                unit = price * plan.llm_markup / PER_MILLION
                lines.append(_line(f"llm_{kind}_tokens:{where}",
                                   f"LLM {kind} tokens, {where}", count, unit, **meta))  # fmt: skip
    return lines


def total(lines: list[Line]) -> Decimal:
    return sum((line.amount for line in lines), Decimal("0.00"))


def _minor(amount: Decimal, currency: str) -> int:
    return int((amount * MINOR_UNITS[currency]).to_integral_value(ROUND_HALF_UP))


def _unix(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def stripe_invoice(invoice: dict[str, Any]) -> dict[str, Any]:
    """An invoice as Stripe's Invoice object shapes it: amounts in the currency's minor
    unit (integers), each line with its price's `unit_amount_decimal` (minor units, a
    decimal string); the lines are what `POST /v1/invoiceitems` takes."""
    currency = invoice["currency"]
    first, last = month_days(parse_month(invoice["month"]))
    period = {"start": _unix(first), "end": _unix(last) + 86_400}
    scale = MINOR_UNITS[currency]
    lines = [
        {
            "object": "line_item",
            "id": f"il_{invoice['invoice_id']}_{n}",
            "amount": _minor(Decimal(line["amount"]), currency),
            "currency": currency,
            "description": line["description"],
            "quantity": line["quantity"],
            "period": period,
            "price": {
                "object": "price",
                "currency": currency,
                "unit_amount_decimal": decimal_text(Decimal(line["unit_amount"]) * scale),
            },
            "metadata": {"item": line["item"], **line.get("metadata", {})},
        }
        for n, line in enumerate(invoice["lines"], start=1)
    ]
    amount = _minor(Decimal(invoice["total"]), currency)
    return {
        "object": "invoice",
        "id": invoice["invoice_id"],
        "customer": invoice["tenant_id"],
        "currency": currency,
        "status": "open" if invoice["status"] == "final" else "draft",
        "period_start": period["start"],
        "period_end": period["end"],
        "subtotal": amount,
        "total": amount,
        "amount_due": amount,
        "lines": {"object": "list", "data": lines, "has_more": False},
        "metadata": {"month": invoice["month"], "plan": invoice.get("plan", "")},
    }


CSV_COLUMNS = ["invoice_id", "tenant_id", "month", "status", "currency", "item",
               "description", "quantity", "unit_amount", "amount"]  # fmt: skip


def invoices_csv(invoices: list[dict[str, Any]]) -> str:
    """One row per line item, amounts as exact decimal text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for invoice in invoices:
        for line in invoice["lines"]:
            writer.writerow([invoice["invoice_id"], invoice["tenant_id"], invoice["month"],
                             invoice["status"], invoice["currency"], line["item"],
                             line["description"], line["quantity"],
                             decimal_text(line["unit_amount"]),
                             decimal_text(line["amount"])])  # fmt: skip
    return out.getvalue()


# One query for a tenant's invoices with their lines (row-level security scopes it to the
# tenant of the transaction); money travels as text so that no float ever holds it.
INVOICES_SQL = """
select i.invoice_id, i.tenant_id::text as tenant_id, to_char(i.month, 'YYYY-MM') as month,
       i.plan, i.currency, i.status, i.total::text as total, i.usage, i.prices,
       i.computed_at, i.finalized_at,
       (select coalesce(jsonb_agg(jsonb_build_object(
                 'item', l.item, 'description', l.description, 'quantity', l.quantity,
                 'unit_amount', l.unit_amount::text, 'amount', l.amount::text,
                 'metadata', l.metadata) order by l.line_no), '[]'::jsonb)
          from invoice_lines l where l.invoice_id = i.invoice_id) as lines
from invoices i
where (%(month)s::date is null or i.month = %(month)s::date)
  and (%(invoice_id)s::text is null or i.invoice_id = %(invoice_id)s::text)
order by i.month desc
"""


def shape_invoice(row: dict[str, Any]) -> dict[str, Any]:
    """A row of `INVOICES_SQL` as the API shows an invoice (money as `Decimal`)."""
    return {
        "invoice_id": row["invoice_id"],
        "tenant_id": row["tenant_id"],
        "month": row["month"],
        "plan": row["plan"],
        "currency": row["currency"],
        "status": row["status"],
        "lines": [
            {
                **line,
                "unit_amount": plain(Decimal(line["unit_amount"])),
                "amount": Decimal(line["amount"]),
            }
            for line in row["lines"]
        ],
        "total": Decimal(row["total"]),
        "usage": row["usage"],
        "terms": row["prices"]["plan"],  # the plan's terms the invoice was priced with
        "computed_at": row["computed_at"].isoformat(),
        "finalized_at": row["finalized_at"].isoformat() if row["finalized_at"] else None,
    }


def invoice_json(payload: Any) -> bytes:
    """JSON with `Decimal` written as exact JSON numbers (never through a float)."""
    import orjson

    def exact(value: Any) -> Any:
        if isinstance(value, Decimal):
            return orjson.Fragment(format(value, "f"))
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    return orjson.dumps(payload, default=exact)


def render_invoices(
    invoices: list[dict[str, Any]], fmt: str, one: bool = False
) -> tuple[bytes, str]:
    """Invoices as `json` (exact decimal numbers), `csv` (a row per line item) or
    `stripe` (Stripe Invoice objects): the body and its media type. `one`: the first
    invoice alone rather than a list."""
    if fmt == "csv":
        return invoices_csv(invoices).encode(), "text/csv; charset=utf-8"
    if fmt == "stripe":
        shaped = [stripe_invoice(invoice) for invoice in invoices]
        return invoice_json(shaped[0] if one else {"data": shaped}), "application/json"
    return invoice_json(invoices[0] if one else {"invoices": invoices}), "application/json"


def load_invoices(
    app_database_url: str, tenant_id: str, month: date | None = None
) -> list[dict[str, Any]]:
    """A tenant's invoices, newest first, read as the app role under row-level security
    (for the CLI and the dashboards; the API runs `INVOICES_SQL` on its async pool)."""
    from chatlake.db import tenant_connection

    with tenant_connection(app_database_url, tenant_id) as conn:
        rows = conn.execute(INVOICES_SQL, {"month": month, "invoice_id": None}).fetchall()
    return [shape_invoice(row) for row in rows]
