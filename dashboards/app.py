"""The tenant analytics dashboards: `streamlit run dashboards/app.py` (`chatlake up`
serves it on :8501). Every page reads the marts of the signed-in user's tenant only, and
the navigation lists only the pages the user's role may see (each page checks it again)."""

from __future__ import annotations

import streamlit as st

from chatlake.settings import get_settings
from dashboards.auth import current_user, may_see, sign_in_form, sign_out
from dashboards.data import MartsNotBuilt, tenant_name

st.set_page_config(page_title="chatlake analytics", page_icon=":speech_balloon:", layout="wide")

user = current_user()
if user is None:
    sign_in_form()
    st.stop()
assert user is not None

PAGES = [  # (page, script, title, icon)
    ("overview", "views/overview.py", "Overview", ":material/monitoring:"),
    ("conversations", "views/conversations.py", "Conversations", ":material/forum:"),
    ("intents", "views/intents.py", "Intents and failure points", ":material/target:"),
    ("usage", "views/usage.py", "Model usage and cost", ":material/payments:"),
    ("billing", "views/billing.py", "Billing and invoices", ":material/receipt_long:"),
    ("quality", "views/quality.py", "Data quality", ":material/verified:"),
]
shown = [
    st.Page(script, title=title, icon=icon, default=not index)
    for index, (_, script, title, icon) in enumerate(p for p in PAGES if may_see(user.role, p[0]))
]
if not shown:
    st.error(f"The {user.role} role shows no dashboard page.")
    st.stop()
navigation = st.navigation(shown)
with st.sidebar:
    st.markdown(f"**{tenant_name(get_settings(), user.tenant_id)}**")
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
