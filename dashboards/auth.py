"""Signing in to the dashboards, who may see which page, and the scope every page reads
with.

The signed-in user lives in the session's server-side state (`st.session_state`); the
tenant a page reads is always that user's tenant, never a value from the address or a
widget. A `tenant` (or `tenant_id`) parameter in the address that names another tenant is
refused outright. An open session is re-checked against the database every
`RECHECK_SECONDS` (one small query): a deleted account or a suspended tenant ends it, a
changed role applies. Each page says which page it is; a role that may not see it is
refused (`ROLE_PAGES`, written down in the README).
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from chatlake.settings import Settings, get_settings
from chatlake.users import SignedIn, SignInRefused, sign_in, still_signed_in
from dashboards.data import TenantMarts
from dashboards.dbrole import database_url, redis_url

USER = "chatlake_user"
CHECKED_AT = "chatlake_user_checked_at"
ENDED = "chatlake_session_ended"
FORGEABLE = ("tenant", "tenant_id")
RECHECK_SECONDS = 15.0  # how long a suspension or a deleted account may go unnoticed

ANALYTICS = frozenset({"overview", "conversations", "intents", "usage", "quality"})
# billing and invoices are money matters: the tenant's owner and admins only
ROLE_PAGES: dict[str, frozenset[str]] = {
    "owner": ANALYTICS | {"billing"},
    "admin": ANALYTICS | {"billing"},
    "analyst": ANALYTICS,
    "agent": frozenset({"overview", "conversations"}),
    "compliance": frozenset({"overview", "quality"}),
}


def may_see(role: str, page: str) -> bool:
    return page in ROLE_PAGES.get(role, frozenset())


@st.cache_resource
def _stores() -> tuple[Settings, Any, Any, str]:
    from chatlake.keyspace import redis_sync_client
    from chatlake.secrets import secret_box

    settings = get_settings()
    return (
        settings,
        redis_sync_client(redis_url(settings)),
        secret_box(settings),
        database_url(settings),
    )


def current_user() -> SignedIn | None:
    """The session's user, re-checked in the database when the last check is older than
    `RECHECK_SECONDS`; None (the session ended) when the account is gone or the tenant
    suspended."""
    user = st.session_state.get(USER)
    if not isinstance(user, SignedIn):
        return None
    if time.monotonic() - st.session_state.get(CHECKED_AT, 0.0) >= RECHECK_SECONDS:
        fresh = still_signed_in(_stores()[3], user)
        if fresh is None:
            sign_out()
            st.session_state[ENDED] = True
            return None
        st.session_state[USER], st.session_state[CHECKED_AT] = fresh, time.monotonic()
        user = fresh
    return user


def sign_in_form() -> None:
    """The sign-in page; on success the user is stored in the session and the app reruns.
    The code field is always there, and a wrong password and a right one without its code
    get the same answer."""
    st.title("chatlake analytics")
    st.caption("Sign in with the account your platform operator created for you.")
    if st.session_state.pop(ENDED, False):
        st.warning("Your session ended: the account or its tenant is no longer active.")
    with st.form("sign-in"):
        email = st.text_input("Email", key="email")
        password = st.text_input("Password", type="password", key="password")
        code = st.text_input("Authenticator code (if your account has one)", max_chars=6,
                             key="totp")  # fmt: skip
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    _, redis, box, url = _stores()
    try:
        user = sign_in(url, redis, box, email, password, code)
    except SignInRefused as exc:
        st.error(str(exc))
        return
    st.session_state[USER], st.session_state[CHECKED_AT] = user, time.monotonic()
    for key in ("password", "totp"):  # no secret stays in the session's widget state
        st.session_state.pop(key, None)
    st.rerun()


def sign_out() -> None:
    st.session_state.pop(USER, None)
    st.session_state.pop(CHECKED_AT, None)


def scope(page: str) -> TenantMarts:
    """The marts of the signed-in user's tenant for `page`; stops the page when nobody is
    signed in, the user's role may not see the page, or the address names another
    tenant."""
    user = current_user()
    if user is None:
        st.warning("Sign in first.")
        st.stop()
    assert user is not None
    if not may_see(user.role, page):
        st.error(f"Refused: the {user.role} role does not show this page.")
        st.stop()
    for name in FORGEABLE:
        asked = st.query_params.get(name)
        if asked is not None and asked != user.tenant_id:
            st.error("Refused: these pages show your own tenant only; remove the tenant "
                     "parameter from the address.")  # fmt: skip
            st.stop()
    return TenantMarts(_stores()[0], user.tenant_id)
