"""The tenant analytics dashboards: `streamlit run dashboards/app.py` (`chatlake up`
serves it on :8501). Every page reads the marts of the signed-in user's tenant only."""

from __future__ import annotations

import streamlit as st

from dashboards.auth import current_user, scope, sign_in_form, sign_out
from dashboards.data import MartsNotBuilt, tenant_name

st.set_page_config(page_title="chatlake analytics", page_icon=":speech_balloon:", layout="wide")

user = current_user()
if user is None:
    sign_in_form()
    st.stop()
assert user is not None
marts = scope()  # refuses a forged tenant before any page runs

pages = [
    st.Page("views/overview.py", title="Overview", icon=":material/monitoring:", default=True),
    st.Page("views/conversations.py", title="Conversations", icon=":material/forum:"),
    st.Page("views/intents.py", title="Intents and failure points", icon=":material/target:"),
    st.Page("views/usage.py", title="Model usage and cost", icon=":material/payments:"),
    st.Page("views/billing.py", title="Billing and invoices", icon=":material/receipt_long:"),
    st.Page("views/quality.py", title="Data quality", icon=":material/verified:"),
]
navigation = st.navigation(pages)
with st.sidebar:
    st.markdown(f"**{tenant_name(marts.settings, user.tenant_id)}**")
    st.caption(f"{user.email} · {user.role}")
    if st.button("Sign out"):
        sign_out()
        st.rerun()
try:
    navigation.run()
except MartsNotBuilt as missing:
    st.info(
        f"This page reads {missing}, which the next pipeline run builds "
        "(`chatlake pipeline run`, or Dagster's sensor within a minute of new data)."
    )
