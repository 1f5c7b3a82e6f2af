"""The database URL the dashboards' process gets: the `chatlake_dashboards` role's
(migration 0015), never the owner's. Imports no Streamlit: `chatlake up` calls
`child_environment` before it starts the Streamlit child.

`CHATLAKE_DASHBOARDS_DATABASE_URL`, when set, is used as is (an external database whose
operator gave the role a login). Otherwise the owner gives the role a login with a fresh
random password for this run of `up` (the embedded server; an external owner that may not
alter roles leaves the child the owner's URL, and the pages `set role` down to it, with a
warning). The child's environment loses the owner's and the app's URLs.
"""

from __future__ import annotations

import logging
import os
import secrets
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from chatlake.settings import Settings
from chatlake.users import DASHBOARDS_ROLE

URL_VARIABLE = "CHATLAKE_DASHBOARDS_DATABASE_URL"
OWNER_VARIABLES = ("CHATLAKE_DATABASE_URL", "CHATLAKE_APP_DATABASE_URL")
log = logging.getLogger(__name__)


def database_url(settings: Settings) -> str:
    """Where the pages read: the role's URL given to this process, else (a Streamlit run
    by hand, the tests) the owner's, from which every connection drops to the role."""
    given = os.environ.get(URL_VARIABLE)
    if given:
        return given
    from chatlake.embedded import Services

    return Services(settings).endpoints().database_url


def redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    from chatlake.embedded import Services

    return Services(settings).endpoints().redis_url


def login_url(owner_url: str) -> str:
    """A URL that logs in as the dashboards' role, its password set now by the owner."""
    password = secrets.token_urlsafe(24)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("alter role {} login password {}").format(
                sql.Identifier(DASHBOARDS_ROLE), sql.Literal(password)
            )
        )
    parts = urlsplit(owner_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(DASHBOARDS_ROLE, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def child_environment(settings: Settings) -> dict[str, str]:
    """The Streamlit child's environment: the dashboards' role's URL and the stores it
    needs, without the owner's or the app's database URL."""
    from chatlake.embedded import Services

    endpoints = Services(settings).endpoints()
    url = os.environ.get(URL_VARIABLE)
    if not url:
        try:
            url = login_url(endpoints.database_url)
        except psycopg.errors.InsufficientPrivilege:
            log.warning(
                "the database owner may not give %s a login; set %s (the dashboards "
                "read with the owner's URL, dropping to the role)",
                DASHBOARDS_ROLE,
                URL_VARIABLE,
            )
            url = endpoints.database_url
    env = {k: v for k, v in os.environ.items() if k not in OWNER_VARIABLES}
    env.update(
        CHATLAKE_HOME=str(settings.home),
        CHATLAKE_REDIS_URL=endpoints.redis_url,
        **{URL_VARIABLE: url},
    )
    return env
