"""Model usage and cost: which tier of the fallback chain answered, what the LLM tokens
cost, and how fast each tier replies."""

import streamlit as st

from dashboards.widgets import count, page_scope

st.header("Model usage and cost")
marts, first, last = page_scope("usage")
usage = marts.query(
    """select tier, provider, model, sum(replies)::bigint as replies,
              sum(turns)::bigint as turns, sum(prompt_tokens)::bigint as prompt_tokens,
              sum(completion_tokens)::bigint as completion_tokens,
              sum(cost_usd) as cost_usd,
              sum(latency_p50_ms * turns) / nullif(sum(turns), 0) as latency_p50_ms
       from {usage} where day between $first and $last
       group by 1, 2, 3 order by replies desc""",
    first=first, last=last,
)  # fmt: skip
row = st.columns(3)
row[0].metric("Replies", count(usage["replies"].sum()))
row[1].metric("LLM tokens", count(usage["prompt_tokens"].sum() + usage["completion_tokens"].sum()))
row[2].metric("LLM cost (USD)", f"{usage['cost_usd'].sum():,.4f}")
left, right = st.columns(2)
with left:
    st.subheader("Replies by tier")
    st.bar_chart(usage.groupby("tier")["replies"].sum())
with right:
    st.subheader("Reply latency p50 by tier (ms)")
    st.bar_chart(usage.groupby("tier")["latency_p50_ms"].mean())
daily_cost = marts.query(
    """select day, provider || '/' || model as model, sum(cost_usd) as cost_usd
       from {usage} where day between $first and $last and provider <> '-'
       group by 1, 2 order by 1""",
    first=first, last=last,
)  # fmt: skip
st.subheader("LLM cost per day (USD)")
if daily_cost.empty:
    st.caption("No LLM replies in this period.")
else:
    st.area_chart(daily_cost.pivot(index="day", columns="model", values="cost_usd").fillna(0))
st.dataframe(usage, hide_index=True, width="stretch")
