"""The dashboards through Streamlit's AppTest, against the real stores and marts: users of
two tenants see their own figures only (equal to the marts), every page their role may see
renders with charts (billing for admins only), and a wrong password, a missing or wrong
TOTP code (one answer for both), a locked account, a suspended tenant (at sign-in and in an
open session) and a forged tenant parameter are refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import duckdb
import numpy as np
import pyotp
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from bench.pipeline import generate_day, write_bronze
from chatlake.secrets import secret_box
from chatlake.settings import get_settings
from chatlake.users import MAX_FAILURES, REFUSED, create_user
from dashboards.data import ScopeError, TenantMarts
from pipelines.run import run_pipeline
from tests.utils.factories import create_tenant

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
PAGES = ["views/overview.py", "views/conversations.py", "views/intents.py",
         "views/usage.py", "views/billing.py", "views/quality.py"]  # fmt: skip


@pytest.fixture(scope="module")
def two_tenants(client, admin_headers, services, endpoints, tmp_path_factory):
    """Two tenants with a few days of traffic each (different volumes), built into the
    marts (a lake and warehouse of this module's own) and billed; an analyst of the first
    and an admin of the second."""
    root = tmp_path_factory.mktemp("dashboards")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHATLAKE_LAKE_URI", str(root / "lake"))
        patch.setenv("CHATLAKE_WAREHOUSE_PATH", str(root / "warehouse.duckdb"))
        get_settings.cache_clear()
        settings = get_settings()
        first, second = create_tenant(client, admin_headers), create_tenant(client, admin_headers)
        today = datetime.now(UTC).date()
        rng = np.random.default_rng(3)
        for back in range(3):
            day = today - timedelta(days=back)
            write_bronze(settings.lake_root, *generate_day(day, 240, [first.tenant_id], rng))
            write_bronze(settings.lake_root, *generate_day(day, 60, [second.tenant_id], rng))
        assert run_pipeline(settings, today - timedelta(days=2), today, bill=True)["success"]
        box, tag = secret_box(settings), uuid4().hex[:8]
        analyst = create_user(endpoints.database_url, box, first.tenant_id,
                              f"ana-{tag}@a.test", "analyst")  # fmt: skip
        admin = create_user(endpoints.database_url, box, second.tenant_id, f"bo-{tag}@b.test",
                            "admin")  # fmt: skip
        st.cache_resource.clear()  # the app's store handles, built for these settings
        st.cache_data.clear()
        yield settings, (first, analyst), (second, admin)
        st.cache_resource.clear()
    get_settings.cache_clear()


def sign_in(email: str, password: str, code: str = "") -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.text_input(key="email").input(email)
    app.text_input(key="password").input(password)
    app.text_input(key="totp").input(code)
    app.button[0].click()
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def metrics(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def marts_figures(settings, tenant_id: str) -> dict[str, str]:
    """The overview's figures over all days, straight from the marts."""
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        started, completed, escalated, inbound, outbound, fallbacks = conn.execute(
            """select sum(conversations_started), sum(conversations_completed),
                      sum(conversations_escalated), sum(messages_in), sum(messages_out),
                      sum(fallback_replies)
               from fct_tenant_daily where tenant_id = ?""",
            [tenant_id],
        ).fetchone()
        (p95,) = conn.execute(
            """select quantile_cont(latency_ms, 0.95) from fct_messages
               where tenant_id = ? and direction = 'out' and is_first_reply""",
            [tenant_id],
        ).fetchone()
    return {
        "Conversations": f"{int(started):,}",
        "User messages": f"{int(inbound):,}",
        "Bot replies": f"{int(outbound):,}",
        "p95 reply latency": f"{p95:,.0f} ms",
        "Completion rate": f"{100 * completed / started:.1f}%",
        "Escalation rate": f"{100 * escalated / started:.1f}%",
        "Fallback rate": f"{100 * fallbacks / outbound:.1f}%",
        "Days with traffic": "3",
    }


def test_each_tenant_sees_its_own_figures_on_every_page(two_tenants):
    settings, (first, analyst), (second, admin) = two_tenants
    code = pyotp.parse_uri(admin["totp_uri"]).now()
    for tenant, user, totp in ((first, analyst, ""), (second, admin, code)):
        app = sign_in(user["email"], user["password"], totp)
        assert not app.exception and not app.error, [e.value for e in app.error]
        app.sidebar.selectbox(key="period").select("All time")
        app.run()
        assert metrics(app) == marts_figures(settings, tenant.tenant_id)
        assert app.get("vega_lite_chart"), "the overview has charts"
        for page in PAGES:
            if user is analyst and page == "views/billing.py":
                continue  # not an analyst's (test_an_analyst_cannot_open_billing)
            app.switch_page(page).run()
            assert not app.exception, (page, [e.value for e in app.exception])
            assert not app.error, (page, [e.value for e in app.error])
            assert app.get("vega_lite_chart"), f"{page} shows a chart"
            if page == "views/conversations.py":
                shown = set(app.dataframe[0].value["conversation_id"])
                with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
                    own = {r[0] for r in conn.execute(
                        "select conversation_id from fct_conversations where tenant_id = ?",
                        [tenant.tenant_id]).fetchall()}  # fmt: skip
                assert shown and shown <= own
            if page == "views/billing.py":
                answer = metrics(app)
                assert answer["Status"] == "draft"
    assert marts_figures(settings, first.tenant_id) != marts_figures(settings, second.tenant_id)


def test_sign_in_refuses_wrong_passwords_missing_codes_and_locks_out(two_tenants, endpoints):
    _, (_, analyst), (_, admin) = two_tenants
    wrong = sign_in(analyst["email"], "not-the-password")
    assert [e.value for e in wrong.error] == ["wrong email, password or code"]
    assert not wrong.metric and "chatlake_user" not in wrong.session_state
    unknown = sign_in("nobody@nowhere.test", "whatever")
    assert [e.value for e in unknown.error] == ["wrong email, password or code"]

    no_code = sign_in(admin["email"], admin["password"])
    assert [e.value for e in no_code.error] == [REFUSED] and not no_code.metric
    bad_code = sign_in(admin["email"], admin["password"], "000000")
    assert bad_code.error and not bad_code.metric
    secret = pyotp.parse_uri(admin["totp_uri"]).secret
    # the next step's code (the module's first test signed this admin in with the current
    # one, and a code once used is not taken again)
    code = pyotp.TOTP(secret).at(time.time() + 30)
    good = sign_in(admin["email"], admin["password"], code)
    assert not good.error and good.metric
    replayed = sign_in(admin["email"], admin["password"], code)
    assert replayed.error and not replayed.metric

    # an account of its own, so the lockout leaves the module's users alone
    settings = get_settings()
    locked_out = create_user(endpoints.database_url, secret_box(settings), analyst["tenant_id"],
                             f"locked-{uuid4().hex[:8]}@a.test", "analyst")  # fmt: skip
    for _ in range(MAX_FAILURES):
        sign_in(locked_out["email"], "guess")
    locked = sign_in(locked_out["email"], locked_out["password"])  # right, but locked out
    assert "too many failed sign-ins" in locked.error[0].value and not locked.metric


def test_a_forged_tenant_parameter_is_refused(two_tenants):
    settings, (first, analyst), (second, _) = two_tenants
    app = sign_in(analyst["email"], analyst["password"])
    assert (
        metrics(app)["Conversations"] == marts_figures(settings, first.tenant_id)["Conversations"]
    )
    for name in ("tenant", "tenant_id"):
        app.query_params[name] = second.tenant_id
        app.run()
        assert app.error and app.error[0].value.startswith("Refused"), name
        assert not app.metric and not app.dataframe
        for page in PAGES[1:]:
            if page == "views/billing.py":
                continue  # not an analyst's page
            app.switch_page(page).run()
            assert app.error and not app.dataframe and not app.metric, page
        del app.query_params[name]
        app.switch_page("views/overview.py").run()
    app.query_params["tenant"] = first.tenant_id  # one's own tenant is no forgery
    app.run()
    assert not app.error and metrics(app)


def test_queries_cannot_name_a_mart_directly(settings):
    marts = TenantMarts(settings, str(uuid4()))
    with pytest.raises(ScopeError):
        marts.query("select * from fct_messages")
    with pytest.raises(ScopeError):
        marts.query("select * from {messages} union all select * from FCT_MESSAGES")
    with pytest.raises(ValueError):
        TenantMarts(settings, "' or 1=1 --")


def shown(app: AppTest) -> list[tuple[str, object]]:
    """Every element the page shows, in order: its value, or a field's label (what was
    typed into it differs)."""
    found: list[tuple[str, object]] = []
    for element in app.main:
        if element.type == "text_input" or getattr(element, "value", None) is None:
            found.append((element.type, getattr(element, "label", None)))
        else:
            found.append((element.type, element.value))
    return found


def test_a_wrong_password_and_a_right_one_without_the_code_look_the_same(two_tenants):
    _, _, (_, admin) = two_tenants
    wrong = sign_in(admin["email"], "not-the-password")
    right_without_code = sign_in(admin["email"], admin["password"])
    assert [e.value for e in wrong.error] == [REFUSED]
    assert shown(wrong) == shown(right_without_code)
    labels = [t.label for t in right_without_code.text_input]
    assert labels == [t.label for t in AppTest.from_file(APP, default_timeout=60).run().text_input]


def test_an_analyst_cannot_open_billing(two_tenants):
    from chatlake.users import SignedIn
    from dashboards.auth import USER

    _, (_, analyst), _ = two_tenants
    app = sign_in(analyst["email"], analyst["password"])
    assert metrics(app)  # signed in, on the overview
    with pytest.raises(ValueError, match="navigation page"):  # not in the analyst's menu
        app.switch_page("views/billing.py")
    # and the page itself refuses an analyst's session, however it is reached
    page = AppTest.from_file(str(Path(APP).parent / "views" / "billing.py"), default_timeout=60)
    page.session_state[USER] = app.session_state[USER]
    assert isinstance(page.session_state[USER], SignedIn)
    page.run()
    assert not page.exception and not page.metric and not page.get("download_button")
    assert page.error and page.error[0].value.startswith("Refused")


def test_a_suspended_tenant_cannot_sign_in_and_its_open_sessions_end(
    two_tenants, client, admin_headers, endpoints, monkeypatch
):
    from dashboards import auth

    settings = get_settings()
    tenant = create_tenant(client, admin_headers)
    user = create_user(endpoints.database_url, secret_box(settings), tenant.tenant_id,
                       f"sus-{uuid4().hex[:8]}@s.test", "analyst")  # fmt: skip
    opened = sign_in(user["email"], user["password"])
    assert "chatlake_user" in opened.session_state and not opened.error

    def suspend(status: str) -> None:
        answer = client.patch(
            f"/v1/tenants/{tenant.tenant_id}", json={"status": status}, headers=admin_headers
        )
        assert answer.status_code == 200, answer.text

    suspend("suspended")
    try:
        refused = sign_in(user["email"], user["password"])
        assert "suspended" in refused.error[0].value
        assert "chatlake_user" not in refused.session_state
        # the open session: re-checked on its next run once the interval passed
        monkeypatch.setattr(auth, "RECHECK_SECONDS", 0.0)
        opened.run()
        assert "chatlake_user" not in opened.session_state
        assert opened.text_input(key="password") is not None  # back at the sign-in form
        assert any("session ended" in w.value for w in opened.warning)
    finally:
        suspend("active")
    assert not sign_in(user["email"], user["password"]).error
