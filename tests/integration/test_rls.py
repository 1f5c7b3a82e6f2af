"""Tenant isolation in PostgreSQL itself: row-level security against the app role."""

from __future__ import annotations

import psycopg
import pytest

from chatlake.db import APP_ROLE

# Every table the app or dashboards role may touch: the policy test holds this list to the
# migrated schema, so a new tenant table must join it, and then every test here covers it.
TENANT_TABLES = (
    "tenants",
    "api_keys",
    "audit_log",
    "intents",
    "nlu_models",
    "flows",
    "entities",
    "knowledge_documents",
    "knowledge_chunks",
    "model_chains",
    "erasure_requests",
    "nlu_review_items",
    "nlu_labels",
    "invoices",
    "invoice_lines",
    "users",
    "channel_configs",
    "channel_identities",
    "compliance_jobs",
)
ROLES = (APP_ROLE, "chatlake_dashboards")
# chatlake/db/migrations/rls.py: (rls enabled, rls forced, [(name, command, using, check)])
TENANT_POLICY = (
    True,
    False,  # not forced: the owner's SECURITY DEFINER functions read across tenants
    [("tenant_isolation", "*", "(tenant_id = current_tenant_id())",
      "(tenant_id = current_tenant_id())")],
)  # fmt: skip


@pytest.fixture
def app_conn(endpoints):
    with psycopg.connect(endpoints.app_database_url) as conn:
        yield conn


def _scope(conn, tenant_id):
    conn.execute("select set_config('chatlake.tenant_id', %s, false)", (tenant_id,))


def test_the_app_connects_as_a_role_that_cannot_bypass_rls(app_conn):
    user, superuser, bypass = app_conn.execute(
        "select current_user, rolsuper, rolbypassrls from pg_roles where rolname = current_user"
    ).fetchone()
    assert (user, superuser, bypass) == (APP_ROLE, False, False)
    owners = {
        row[0]
        for row in app_conn.execute(
            "select tableowner from pg_tables where tablename = any(%s)", (list(TENANT_TABLES),)
        )
    }
    assert APP_ROLE not in owners


def test_every_table_the_roles_reach_is_a_tenant_table_under_the_policy(endpoints):
    """The migrated schema (the session's database was created and migrated for the tests):
    each table the app or dashboards role holds any privilege on is in TENANT_TABLES, and
    each of those has row-level security enabled with the one tenant policy."""
    with psycopg.connect(endpoints.database_url) as owner:
        reached = {
            row[0]
            for row in owner.execute(
                """
                select c.relname from pg_class c, unnest(%s::text[]) as role
                where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v')
                  and (has_table_privilege(role, c.oid,
                         'select, insert, update, delete, truncate, references, trigger')
                       or has_any_column_privilege(role, c.oid,
                         'select, insert, update, references'))
                """,
                (list(ROLES),),
            )
        }
        rows = owner.execute(
            """
            select c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   array(select array[p.polname, p.polcmd::text,
                                      pg_get_expr(p.polqual, p.polrelid),
                                      pg_get_expr(p.polwithcheck, p.polrelid)]
                         from pg_policy p where p.polrelid = c.oid
                         order by p.polname)
            from pg_class c
            where c.relnamespace = 'public'::regnamespace and c.relname = any(%s)
            """,
            (list(TENANT_TABLES),),
        ).fetchall()
    assert reached == set(TENANT_TABLES)
    found = {
        name: (on, forced, [tuple(p) for p in policies]) for name, on, forced, policies in rows
    }
    assert found == dict.fromkeys(TENANT_TABLES, TENANT_POLICY)


def test_a_session_without_a_tenant_sees_no_tenant_rows(app_conn, endpoints, tenant, other_tenant):
    with psycopg.connect(endpoints.database_url) as owner:
        assert owner.execute("select count(*) from tenants").fetchone()[0] >= 2
    for table in TENANT_TABLES:
        assert app_conn.execute(f"select count(*) from {table}").fetchone()[0] == 0, table


def test_a_tenant_session_sees_only_its_own_rows(app_conn, tenant, other_tenant):
    _scope(app_conn, tenant.tenant_id)
    for table in TENANT_TABLES:
        ids = {str(r[0]) for r in app_conn.execute(f"select tenant_id from {table}")}
        assert ids <= {tenant.tenant_id}, table
    assert app_conn.execute("select count(*) from tenants").fetchone()[0] == 1


def test_a_tenant_session_cannot_write_another_tenants_rows(app_conn, tenant, other_tenant):
    _scope(app_conn, tenant.tenant_id)
    updated = app_conn.execute(
        "update tenants set name = 'hijacked' where tenant_id = %s", (other_tenant.tenant_id,)
    )
    assert updated.rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute(
            "insert into audit_log (tenant_id, actor, action) values (%s, 'x', 'forged')",
            (other_tenant.tenant_id,),
        )


def test_the_audit_log_is_append_only(app_conn, endpoints, tenant):
    _scope(app_conn, tenant.tenant_id)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_conn.execute("update audit_log set action = 'rewritten'")
    app_conn.rollback()
    # Not even the owner may rewrite history.
    with psycopg.connect(endpoints.database_url) as owner, pytest.raises(psycopg.Error):
        owner.execute("delete from audit_log")
    _scope(app_conn, tenant.tenant_id)
    actions = [r[0] for r in app_conn.execute("select action from audit_log")]
    assert "tenant.created" in actions
