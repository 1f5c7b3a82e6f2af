"""What the dashboards read, always for one tenant: the signed-in user's.

Queries name the marts only through placeholders (`{daily}`, `{conversations}`, …), each
of which becomes a sub-query filtered on the tenant of the session; a query that names a
mart directly is refused, so no page can read another tenant's rows whatever its inputs.
Invoices come from PostgreSQL under row-level security (the dashboards' own role,
`chatlake_dashboards`, which reads nothing else a page does not show; the tenant's scope).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

import pandas as pd

from chatlake.settings import Settings
from chatlake.users import dashboards_connection
from chatlake.warehouse import has_table, read_warehouse
from dashboards.dbrole import database_url

MARTS = {
    "daily": "fct_tenant_daily",
    "conversations": "fct_conversations",
    "messages": "fct_messages",
    "intents": "fct_intent_performance",
    "usage": "fct_model_usage",
    "quality": "fct_data_quality",
}
_RAW = re.compile(r"\b(fct|stg|int)_\w+", re.IGNORECASE)


class ScopeError(Exception):
    """A query that would read a mart without the tenant filter."""


class MartsNotBuilt(Exception):
    """A mart the page reads does not exist yet (a pipeline run will build it)."""


@dataclass(frozen=True)
class TenantMarts:
    settings: Settings
    tenant_id: str

    def __post_init__(self) -> None:
        UUID(self.tenant_id)  # only a real tenant id is ever bound

    def query(self, sql: str, **params: Any) -> pd.DataFrame:
        """`sql` with `{mart}` placeholders, run with `params` (DuckDB `$name`
        parameters); an empty frame before the warehouse exists, `MartsNotBuilt` when it
        lacks a mart the query reads."""
        if _RAW.search(sql):
            raise ScopeError("name marts through their placeholders, never directly")
        conn = read_warehouse(self.settings)
        if conn is None:
            return pd.DataFrame()
        try:
            used = [name for name in MARTS if "{" + name + "}" in sql]
            missing = [MARTS[name] for name in used if not has_table(conn, MARTS[name])]
            if missing:
                raise MartsNotBuilt(", ".join(missing))
            scoped = {
                name: f"(select * from {MARTS[name]} where tenant_id = $tenant)" for name in MARTS
            }
            return conn.execute(sql.format(**scoped), {**params, "tenant": self.tenant_id}).df()
        finally:
            conn.close()

    def days(self) -> tuple[date, date] | None:
        """The first and last day with data."""
        frame = self.query("select min(day) as first, max(day) as last from {daily}")
        if frame.empty or pd.isna(frame.iloc[0]["first"]):
            return None
        return frame.iloc[0]["first"].date(), frame.iloc[0]["last"].date()


def invoices(settings: Settings, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's invoices, newest first (PostgreSQL as the dashboards' role, row-level
    security)."""
    from chatlake.billing import INVOICES_SQL, shape_invoice

    with dashboards_connection(database_url(settings), tenant_id) as conn:
        rows = conn.execute(INVOICES_SQL, {"month": None, "invoice_id": None}).fetchall()
    return [shape_invoice(row) for row in rows]


def tenant_name(settings: Settings, tenant_id: str) -> str:
    with dashboards_connection(database_url(settings), tenant_id) as conn:
        row = conn.execute("select name from tenants where tenant_id = %s", (tenant_id,)).fetchone()
    return str(row["name"]) if row else "?"
