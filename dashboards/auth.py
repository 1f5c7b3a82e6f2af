"""Signing in to the dashboards, and the scope every page reads with.

The signed-in user lives in the session's server-side state (`st.session_state`); the
tenant a page reads is always that user's tenant, never a value from the address or a
widget. A `tenant` (or `tenant_id`) parameter in the address that names another tenant is
refused outright.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from chatlake.settings import Settings, get_settings
from chatlake.users import SignedIn, SignInRefused, sign_in
from dashboards.data import TenantMarts

USER = "chatlake_user"
FORGEABLE = ("tenant", "tenant_id")


@st.cache_resource
def _stores() -> tuple[Settings, Any, Any, str]:
    from chatlake.embedded import Services
    from chatlake.keyspace import redis_sync_client
    from chatlake.secrets import secret_box

    settings = get_settings()
    endpoints = Services(settings).endpoints()
    return (
        settings,
        redis_sync_client(endpoints.redis_url),
        secret_box(settings),
        (endpoints.database_url),
    )


def current_user() -> SignedIn | None:
    user = st.session_state.get(USER)
    return user if isinstance(user, SignedIn) else None


def sign_in_form() -> None:
    """The sign-in page; on success the user is stored in the session and the app reruns."""
    st.title("chatlake analytics")
    st.caption("Sign in with the account your platform operator created for you.")
    with st.form("sign-in"):
        email = st.text_input("Email", key="email")
        password = st.text_input("Password", type="password", key="password")
        code = st.text_input("Authenticator code (admins)", max_chars=6, key="totp")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    _, redis, box, database_url = _stores()
    try:
        user = sign_in(database_url, redis, box, email, password, code)
    except SignInRefused as exc:
        st.error(str(exc))
        return
    st.session_state[USER] = user
    for key in ("password", "totp"):  # no secret stays in the session's widget state
        st.session_state.pop(key, None)
    st.rerun()


def sign_out() -> None:
    st.session_state.pop(USER, None)


def scope() -> TenantMarts:
    """The marts of the signed-in user's tenant; stops the page when nobody is signed in
    or the address names another tenant."""
    user = current_user()
    if user is None:
        st.warning("Sign in first.")
        st.stop()
    assert user is not None
    for name in FORGEABLE:
        asked = st.query_params.get(name)
        if asked is not None and asked != user.tenant_id:
            st.error("Refused: these pages show your own tenant only; remove the tenant "
                     "parameter from the address.")  # fmt: skip
            st.stop()
    return TenantMarts(_stores()[0], user.tenant_id)
