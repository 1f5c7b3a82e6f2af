"""Data quality: how complete and clean the tenant's data is, day by day, and how fresh."""

import pandas as pd
import streamlit as st

from dashboards.widgets import page_scope

st.header("Data quality")
marts, first, last = page_scope("quality")
quality = marts.query(
    """select day, messages, user_messages, unanswered, without_intent, without_language,
              replies_without_latency, duplicate_events, pii_masked, last_message_at
       from {quality} where day between $first and $last order by day""",
    first=first, last=last,
)  # fmt: skip
if quality.empty:
    st.info("No data-quality figures for this period yet: the next pipeline run over these "
            "days computes them.")  # fmt: skip
    st.stop()
users = max(int(quality["user_messages"].sum()), 1)
replies = max(int(quality["messages"].sum() - quality["user_messages"].sum()), 1)
# (what is counted, how many, of how many, the share above which it needs a look)
checks = [
    ("User messages no reply followed", "unanswered", users, 0.0),
    ("Duplicate event ids", "duplicate_events", users + replies, 0.0),
    ("Replies without a latency", "replies_without_latency", replies, 0.0),
    ("User messages without a detected language", "without_language", users, 0.05),
    ("User messages without a recognised intent", "without_intent", users, 0.5),
]
table = pd.DataFrame(
    [
        {"check": name, "count": int(quality[column].sum()),
         "share": f"{quality[column].sum() / total:.1%}",
         "status": "ok" if quality[column].sum() / total <= limit else "look"}
        for name, column, total, limit in checks
    ]
)  # fmt: skip
failing = int((table["status"] != "ok").sum())
row = st.columns(3)
row[0].metric("Checks passing", f"{len(table) - failing} of {len(table)}")
row[1].metric("Messages with personal data masked", f"{int(quality['pii_masked'].sum()):,}")
row[2].metric(
    "Last message in the marts", f"{pd.Timestamp(quality['last_message_at'].max()):%d %b %H:%M}"
)
st.dataframe(table, hide_index=True, width="stretch")
st.subheader("Issues per day")
st.bar_chart(quality.set_index("day")[["unanswered", "without_intent", "without_language"]])
