"""Intents and failure points: what users ask, how sure the model is, and where the bot
falls back, gets escalated or is abandoned."""

import streamlit as st

from dashboards.widgets import page_scope

st.header("Intents and failure points")
marts, first, last = page_scope("intents")
intents = marts.query(
    """select intent, sum(messages)::bigint as messages,
              sum(mean_confidence * messages) / sum(messages) as mean_confidence,
              sum(fallbacks)::bigint as fallbacks,
              sum(fallbacks) / sum(messages) as fallback_rate
       from {intents} where day between $first and $last
       group by 1 order by messages desc""",
    first=first, last=last,
)  # fmt: skip
st.subheader("Most common intents")
st.bar_chart(intents.head(15), x="intent", y="messages", horizontal=True, sort="-messages")
st.dataframe(intents, hide_index=True, width="stretch")

st.subheader("Failure points")
st.caption("Where users got a fallback reply, by the intent of their message")
failing = intents[intents["fallbacks"] > 0].sort_values("fallbacks", ascending=False)
st.bar_chart(failing.head(15), x="intent", y="fallbacks", horizontal=True, sort="-fallbacks")
endings = marts.query(
    """with last_user_message as (
           select conversation_id, max_by(coalesce(intent, '(none)'), created_at) as intent
           from {messages} where direction = 'in' group by 1
       )
       select l.intent, c.status, count(*) as conversations
       from {conversations} c join last_user_message l using (conversation_id)
       where c.status <> 'completed' and c.day between $first and $last
       group by 1, 2 order by conversations desc limit 20""",
    first=first, last=last,
)  # fmt: skip
st.caption("The last thing users asked in conversations that were escalated or abandoned")
st.dataframe(endings, hide_index=True, width="stretch")
