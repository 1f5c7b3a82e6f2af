"""Tenant row-level security for migration scripts: `tenant_rls(table, grant)`.

Every table of tenants' rows that the app role may touch carries a `tenant_id` column and
the same policy: a session sees and writes only the rows of the tenant it named
(`current_tenant_id()`, from `chatlake.tenant_id`; see chatlake.db), and none when it named
no tenant. A revision that creates such a table calls `tenant_rls` once per table, after
creating it:

    from chatlake.db.migrations.rls import tenant_rls

    tenant_rls("widgets", "select, insert, update, delete")

Row-level security is enabled, not forced: the app role (`chatlake_app`) owns no table, so
it is always subject to the policy, while the owner is not, which the SECURITY DEFINER
functions rely on (the audit chain, the dashboards' sign-in, the platform's count of
compliance jobs) and so do migrations that rewrite rows of every tenant.

Revisions that have already run call this too, in place of the SQL they used to spell out:
the same statements (0001 and 0002 now grant table by table rather than in one block at the
end), the same schema. So it must keep emitting exactly this; a table that needs another
policy gets a new function here, not a change to this one.
"""

from __future__ import annotations

from alembic import op


def tenant_rls(table: str, grant: str) -> None:
    """Enable row-level security on `table` with the tenant policy, and grant the app role
    `grant` on it (privileges as SQL writes them, e.g. "select, insert, update")."""
    op.execute(
        f"""
        alter table {table} enable row level security;
        create policy tenant_isolation on {table}
          using (tenant_id = current_tenant_id())
          with check (tenant_id = current_tenant_id());
        grant {grant} on {table} to chatlake_app;
        """
    )
