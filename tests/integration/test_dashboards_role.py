"""The dashboards' database role (migration 0015, dashboards/dbrole.py): the Streamlit
child of `chatlake up` gets a URL that logs in as `chatlake_dashboards`, never the
owner's; that role reads a tenant's name, invoices and users' roles under row-level
security, and cannot read API keys, provider or channel secrets, password hashes or TOTP
secrets, nor write anything."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from chatlake.secrets import secret_box
from chatlake.users import DASHBOARDS_ROLE, create_user
from dashboards.dbrole import OWNER_VARIABLES, URL_VARIABLE, child_environment
from tests.utils.factories import create_tenant

FORBIDDEN_READS = [
    "select * from api_keys",
    "select key_hash from api_keys",
    "select * from model_chains",
    "select tiers from model_chains",
    "select * from channel_configs",
    "select sealed_secrets from channel_configs",
    "select * from users",
    "select password_hash from users",
    "select totp_sealed from users",
    "select * from tenants",  # only the columns the pages show
    "select * from audit_log",
    "select * from flows",
]
FORBIDDEN_WRITES = [
    "insert into tenants (name, rate_limit_per_minute) values ('x', 1)",
    "update tenants set status = 'suspended'",
    "update users set role = 'admin'",
    "delete from users",
    "delete from invoices",
    "update invoice_lines set amount = 0",
    "insert into api_keys (tenant_id, display_prefix, key_hash) "
    "values (current_tenant_id(), 'x', '\\x00')",
    "create table dashboards_were_here (x int)",
]


@pytest.fixture(scope="module")
def role_url(services, settings):
    """The URL `chatlake up` hands the Streamlit child."""
    env = child_environment(settings)
    assert not set(OWNER_VARIABLES) & set(env)
    return env[URL_VARIABLE]


def _denied(url: str, tenant_id: str, statement: str) -> bool:
    with psycopg.connect(url) as conn:
        conn.execute("select set_config('chatlake.tenant_id', %s, false)", (tenant_id,))
        try:
            conn.execute(statement)
        except errors.InsufficientPrivilege:
            return True
    return False


def test_the_childs_url_logs_in_as_the_dashboards_role(role_url, endpoints):
    assert role_url != endpoints.database_url
    with psycopg.connect(role_url) as conn:
        assert conn.execute("select current_user").fetchone()[0] == DASHBOARDS_ROLE
        superuser, bypass = conn.execute(
            "select rolsuper, rolbypassrls from pg_roles where rolname = current_user"
        ).fetchone()
    assert not superuser and not bypass


@pytest.mark.parametrize("statement", FORBIDDEN_READS + FORBIDDEN_WRITES)
def test_the_dashboards_role_reads_nothing_secret_and_writes_nothing(
    role_url, client, admin_headers, statement
):
    tenant = create_tenant(client, admin_headers)
    assert _denied(role_url, tenant.tenant_id, statement), statement


def test_what_it_reads_is_its_tenants_only(role_url, client, admin_headers, endpoints, settings):
    mine, other = create_tenant(client, admin_headers), create_tenant(client, admin_headers)
    create_user(endpoints.database_url, secret_box(settings), other.tenant_id,
                f"other-{other.tenant_id[:8]}@o.test", "analyst")  # fmt: skip
    with psycopg.connect(role_url) as conn:
        conn.execute("select set_config('chatlake.tenant_id', %s, false)", (mine.tenant_id,))
        names = conn.execute("select tenant_id::text from tenants").fetchall()
        users = conn.execute("select email from users where tenant_id = %s", (other.tenant_id,))
        assert names == [(mine.tenant_id,)] and users.fetchall() == []
        conn.execute("select set_config('chatlake.tenant_id', '', false)")
        assert conn.execute("select count(*) from tenants").fetchone()[0] == 0
