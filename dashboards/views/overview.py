"""Overview: volumes, outcomes and latency over the period, and their trends."""

import streamlit as st

from dashboards.widgets import count, millis, page_scope, percent

st.header("Overview")
marts, first, last = page_scope("overview")
daily = marts.query(
    """select day, messages_in, messages_out, conversations_started,
              conversations_completed, conversations_escalated, fallback_replies,
              latency_p95_ms, completion_rate, escalation_rate, fallback_rate
       from {daily} where day between $first and $last order by day""",
    first=first, last=last,
)  # fmt: skip
latency = marts.query(
    """select quantile_cont(latency_ms, 0.95) as p95 from {messages}
       where direction = 'out' and is_first_reply and day between $first and $last""",
    first=first, last=last,
)  # fmt: skip
started = daily["conversations_started"].sum()
row = st.columns(4)
row[0].metric("Conversations", count(started))
row[1].metric("User messages", count(daily["messages_in"].sum()))
row[2].metric("Bot replies", count(daily["messages_out"].sum()))
row[3].metric("p95 reply latency", millis(latency["p95"].iloc[0] if len(latency) else None))
row = st.columns(4)
row[0].metric("Completion rate", percent(daily["conversations_completed"].sum(), started))
row[1].metric("Escalation rate", percent(daily["conversations_escalated"].sum(), started))
row[2].metric(
    "Fallback rate", percent(daily["fallback_replies"].sum(), daily["messages_out"].sum())
)
row[3].metric("Days with traffic", count(len(daily)))

trend = daily.set_index("day")
st.subheader("Messages per day")
st.line_chart(trend[["messages_in", "messages_out"]].rename(
    columns={"messages_in": "user messages", "messages_out": "bot replies"}))  # fmt: skip
left, right = st.columns(2)
with left:
    st.subheader("Outcome rates")
    st.line_chart(trend[["completion_rate", "escalation_rate", "fallback_rate"]])
with right:
    st.subheader("p95 reply latency (ms)")
    st.line_chart(trend[["latency_p95_ms"]])
