"""Conversation explorer: every conversation of the period (users pseudonymized), and the
messages of the one picked, PII-masked as the lake's silver layer holds them."""

import streamlit as st

from dashboards.widgets import page_scope

st.header("Conversations")
marts, first, last = page_scope("conversations")
statuses = st.multiselect(
    "Status", ["completed", "abandoned", "escalated"],
    default=["completed", "abandoned", "escalated"], key="statuses",
)  # fmt: skip
conversations = marts.query(
    """select conversation_id, day, status, turns, messages, fallback_replies,
              round(duration_s) as duration_s, rating, channel, user_key
       from {conversations}
       where day between $first and $last and list_contains($statuses, status)
       order by started_at desc limit 500""",
    first=first, last=last, statuses=statuses,
)  # fmt: skip
st.caption(f"{len(conversations):,} conversations (the latest 500 at most)")
counts = conversations.groupby("status").size().rename("conversations")
st.bar_chart(counts, horizontal=True)
st.dataframe(conversations, hide_index=True, width="stretch")
if conversations.empty:
    st.stop()
picked = st.selectbox("Open a conversation", conversations["conversation_id"], key="picked")
messages = marts.query(
    """select created_at, direction, text, intent, round(confidence, 2) as confidence, tier,
              provider, model, latency_ms
       from {messages} where conversation_id = $conversation order by created_at, direction""",
    conversation=picked,
)  # fmt: skip
st.dataframe(messages, hide_index=True, width="stretch")
