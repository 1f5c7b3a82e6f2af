"""The dashboards' own database role, `chatlake_dashboards`: the Streamlit process reads
with it what its pages show and nothing else (issue 17; it used to hold the owner's URL).

It may read, under row-level security (the tenant named per transaction, as the app
role): a tenant's name and status, its invoices and their lines, and its users' id, email
and role (to re-check an open session). It cannot read API keys, provider or channel
secrets, password hashes or TOTP secrets, and cannot write. Signing in, where the tenant
is not yet known, goes through two SECURITY DEFINER functions: the credentials of one
account by its exact email, and recording that account's sign-in time.

NOLOGIN here; `chatlake up` gives the embedded server's role a login with a password of
the moment (dashboards/dbrole.py); an external database's operator may give it one and
set CHATLAKE_DASHBOARDS_DATABASE_URL.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        do $$
        begin
          if not exists (select 1 from pg_roles where rolname = 'chatlake_dashboards') then
            create role chatlake_dashboards nologin nosuperuser nobypassrls nocreatedb
              nocreaterole;
          end if;
          -- lets a single-URL deployment (and the tests) `set role chatlake_dashboards`
          if current_user <> 'chatlake_dashboards'
             and not pg_has_role(current_user, 'chatlake_dashboards', 'member') then
            execute format('grant chatlake_dashboards to %I', current_user);
          end if;
        end $$;

        grant usage on schema public to chatlake_dashboards;
        grant execute on function current_tenant_id() to chatlake_dashboards;
        grant select (tenant_id, name, status) on tenants to chatlake_dashboards;
        grant select on invoices, invoice_lines to chatlake_dashboards;
        grant select (user_id, tenant_id, email, role) on users to chatlake_dashboards;

        create function dashboard_credentials(p_email text)
        returns table (user_id uuid, tenant_id uuid, email text, role text,
                       password_hash text, totp_sealed text, tenant_status text)
        language sql stable security definer set search_path = public, pg_temp
        as $$
          select u.user_id, u.tenant_id, u.email, u.role, u.password_hash, u.totp_sealed,
                 t.status
          from users u join tenants t on t.tenant_id = u.tenant_id
          where u.email = lower(p_email)
        $$;

        create function dashboard_signed_in(p_user_id uuid) returns void
        language sql volatile security definer set search_path = public, pg_temp
        as $$ update users set last_login_at = now() where user_id = p_user_id $$;

        revoke all on function dashboard_credentials(text) from public;
        revoke all on function dashboard_signed_in(uuid) from public;
        grant execute on function dashboard_credentials(text) to chatlake_dashboards;
        grant execute on function dashboard_signed_in(uuid) to chatlake_dashboards;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        drop function if exists dashboard_signed_in(uuid);
        drop function if exists dashboard_credentials(text);
        revoke select on invoices, invoice_lines from chatlake_dashboards;
        revoke select (tenant_id, name, status) on tenants from chatlake_dashboards;
        revoke select (user_id, tenant_id, email, role) on users from chatlake_dashboards;
        revoke execute on function current_tenant_id() from chatlake_dashboards;
        revoke usage on schema public from chatlake_dashboards;
        """
    )
