"""Small pieces the pages share: the period picker and number formats."""

from __future__ import annotations

from datetime import date, timedelta

import streamlit as st

from dashboards.data import TenantMarts

PERIODS = {"Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90, "All time": None}


def period(marts: TenantMarts) -> tuple[date, date] | None:
    """The days the page covers, counted back from the last day with data; None (and a
    note) before the tenant has any."""
    days = marts.days()
    if days is None:
        st.info("No data yet: conversations show here after the next pipeline run "
                "(`chatlake pipeline run`, or the Dagster sensor within a minute).")  # fmt: skip
        return None
    choice = st.sidebar.selectbox("Period", list(PERIODS), index=1, key="period")
    back = PERIODS[choice]
    first = days[0] if back is None else max(days[0], days[1] - timedelta(days=back - 1))
    st.caption(f"{first:%d %b %Y} - {days[1]:%d %b %Y}")
    return first, days[1]


def page_scope(page: str) -> tuple[TenantMarts, date, date]:
    """The signed-in user's marts for `page` (see `dashboards.auth.scope`) and the period
    the page covers; stops the page (with a note) before the tenant has data."""
    from dashboards.auth import scope

    marts = scope(page)
    days = period(marts)
    if days is None:
        st.stop()
    assert days is not None
    return marts, days[0], days[1]


def count(value: object) -> str:
    return f"{int(value or 0):,}"  # type: ignore[call-overload]


def percent(part: float, whole: float) -> str:
    return "-" if not whole else f"{100 * part / whole:.1f}%"


def millis(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:,.0f} ms"
