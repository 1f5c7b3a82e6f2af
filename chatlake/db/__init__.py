"""PostgreSQL access: connection pools and the one tenant-scoping helper.

The application connects as `chatlake_app` (no superuser, no BYPASSRLS, not a table owner),
so row-level security applies to every query; each transaction names its tenant with
`set_config('chatlake.tenant_id', …, true)`. A session that names no tenant sees no rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from uuid import UUID

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

APP_ROLE = "chatlake_app"
AppConnection = psycopg.AsyncConnection[DictRow]
AppPool = AsyncConnectionPool[AppConnection]
TENANT_SETTING = "chatlake.tenant_id"


async def _configure_app_connection(conn: AppConnection) -> None:
    # With one URL for owner and app (an external database), drop to the app role so
    # row-level security applies as it does for the embedded `chatlake_app` login.
    if conn.info.user != APP_ROLE:
        await conn.execute(f"set role {APP_ROLE}")
    await conn.commit()


def open_app_pool(url: str, max_size: int = 4) -> AppPool:
    """A pool of app-role connections; open it with `await pool.open()`."""
    return AsyncConnectionPool(
        url,
        connection_class=psycopg.AsyncConnection[DictRow],
        min_size=1,
        max_size=max_size,
        open=False,
        configure=_configure_app_connection,
        kwargs={"row_factory": dict_row, "autocommit": False},
        name="chatlake-app",
    )


@asynccontextmanager
async def tenant_transaction(pool: AppPool, tenant_id: UUID | str) -> AsyncIterator[AppConnection]:
    """A transaction in which row-level security shows only `tenant_id`'s rows."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("select set_config(%s, %s, true)", (TENANT_SETTING, str(tenant_id)))
        yield conn


@contextmanager
def owner_connection(url: str) -> Iterator[psycopg.Connection[DictRow]]:
    """A connection as the schema owner: migrations and platform-wide admin only."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        yield conn


@contextmanager
def tenant_connection(
    url: str, tenant_id: UUID | str, snapshot: bool = False
) -> Iterator[psycopg.Connection[DictRow]]:
    """One transaction as the app role in which row-level security shows only
    `tenant_id`'s rows: for jobs outside the API (the pipelines), same rules as the API.
    `snapshot`: repeatable read, so every query sees the same snapshot."""
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
        if conn.info.user != APP_ROLE:
            conn.execute(f"set role {APP_ROLE}")
        if snapshot:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            conn.execute("select set_config(%s, %s, true)", (TENANT_SETTING, str(tenant_id)))
            yield conn
