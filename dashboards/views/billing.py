"""Billing and invoices: the current draft, past invoices, and exports (CSV, JSON with
exact amounts, Stripe invoice objects)."""

import pandas as pd
import streamlit as st

from chatlake.billing import invoice_json, invoices_csv, stripe_invoice
from dashboards.auth import scope
from dashboards.data import invoices

st.header("Billing and invoices")
marts = scope("billing")
found = invoices(marts.settings, marts.tenant_id)
if not found:
    st.info("No invoices yet: the pipeline drafts this month's invoice on its next run.")
    st.stop()
months = [invoice["month"] for invoice in found]
month = st.selectbox("Month", months, key="month")
invoice = found[months.index(month)]
row = st.columns(3)
row[0].metric(f"Total ({invoice['currency'].upper()})", f"{invoice['total']:,.2f}")
row[1].metric("Status", invoice["status"])
row[2].metric("Plan", invoice["plan"])
lines = pd.DataFrame(invoice["lines"])[["description", "quantity", "unit_amount", "amount"]]
lines["unit_amount"] = lines["unit_amount"].map(lambda value: format(value, "f"))
lines["amount"] = lines["amount"].map(lambda value: f"{value:,.2f}")
st.dataframe(lines, hide_index=True, width="stretch")
first = pd.Timestamp(f"{month}-01")
daily = marts.query(
    """select day, messages_in from {daily} where day between $first and $last order by day""",
    first=first.date(), last=(first + pd.offsets.MonthEnd(0)).date(),
)  # fmt: skip
st.subheader("End-user messages this month against the plan's included volume")
if daily.empty:
    st.caption("No messages in this month.")
else:
    used = daily.set_index("day")[["messages_in"]].cumsum()
    used.columns = ["end-user messages so far"]
    used["included in the plan"] = invoice["terms"]["included_messages"]
    st.line_chart(used)
if len(found) > 1:
    history = (
        pd.DataFrame({"month": months, "total": [float(i["total"]) for i in found]})
        .set_index("month")
        .sort_index()
    )  # a bar's height: display only, never money arithmetic
    st.subheader("Invoice totals by month")
    st.bar_chart(history)
left, middle, right = st.columns(3)
left.download_button("CSV", invoices_csv([invoice]), f"invoice-{month}.csv", "text/csv")
middle.download_button("JSON", invoice_json(invoice), f"invoice-{month}.json",
                       "application/json")  # fmt: skip
right.download_button("Stripe JSON", invoice_json(stripe_invoice(invoice)),
                      f"invoice-{month}-stripe.json", "application/json")  # fmt: skip
