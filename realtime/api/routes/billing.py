"""The calling tenant's invoices (pipelines/billing.py writes them): JSON with money as
exact decimal numbers, or CSV, or Stripe's Invoice objects."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from chatlake.billing import (
    INVOICES_SQL,
    BillingError,
    parse_month,
    render_invoices,
    shape_invoice,
)
from chatlake.db import tenant_transaction
from realtime.api.deps import PlatformDep, TenantDep
from realtime.api.errors import ApiError
from realtime.api.schemas import InvoiceList, InvoiceOut, error_responses

router = APIRouter(prefix="/v1/billing", tags=["billing"])
ERRORS = error_responses(401, 404, 422)
Format = Literal["json", "csv", "stripe"]


async def _invoices(
    platform: PlatformDep, tenant_id: str, month: date | None, invoice_id: str | None
) -> list[dict[str, Any]]:
    async with tenant_transaction(platform.pool, tenant_id) as conn:
        cur = await conn.execute(INVOICES_SQL, {"month": month, "invoice_id": invoice_id})
        return [shape_invoice(row) for row in await cur.fetchall()]


def _render(invoices: list[dict[str, Any]], fmt: Format, one: bool = False) -> Response:
    body, media_type = render_invoices(invoices, fmt, one)
    return Response(body, media_type=media_type)


@router.get("/invoices", response_model=InvoiceList, responses=ERRORS)
async def list_invoices(
    tenant: TenantDep,
    platform: PlatformDep,
    month: Annotated[str | None, Query(description="YYYY-MM; all months when absent")] = None,
    format: Annotated[
        Format,
        Query(description="json, csv (a row per line item), or stripe (Stripe Invoice objects)"),
    ] = "json",
) -> Response:
    """The tenant's invoices, newest month first. Amounts are exact decimal numbers (parse
    them as decimals, e.g. `json.loads(body, parse_float=Decimal)`)."""
    try:
        first = parse_month(month) if month is not None else None
    except BillingError as exc:
        raise ApiError(422, str(exc)) from None
    return _render(await _invoices(platform, tenant.tenant_id, first, None), format)


@router.get("/invoices/{invoice_id}", response_model=InvoiceOut, responses=ERRORS)
async def get_invoice(
    invoice_id: str,
    tenant: TenantDep,
    platform: PlatformDep,
    format: Annotated[Format, Query()] = "json",
) -> Response:
    """One invoice (another tenant's is a 404)."""
    found = await _invoices(platform, tenant.tenant_id, None, invoice_id[:100])
    if not found:
        raise ApiError(404, f"invoice {invoice_id} not found")
    return _render(found, format, one=True)
