"""Control plane: tenants, API keys, the append-only audit log, row-level security.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        do $$
        begin
          if not exists (select 1 from pg_roles where rolname = 'chatlake_app') then
            create role chatlake_app nologin nosuperuser nobypassrls;
          end if;
          -- lets a single-URL deployment `set role chatlake_app` (see chatlake.db)
          if current_user <> 'chatlake_app'
             and not pg_has_role(current_user, 'chatlake_app', 'member') then
            execute format('grant chatlake_app to %I', current_user);
          end if;
        end $$;
        """
    )
    op.execute(
        """
        create function current_tenant_id() returns uuid
        language sql stable parallel safe
        as $$ select nullif(current_setting('chatlake.tenant_id', true), '')::uuid $$;

        create table tenants (
          tenant_id uuid primary key default gen_random_uuid(),
          name text not null check (length(name) between 1 and 200),
          plan text not null default 'free',
          rate_limit_per_minute integer not null check (rate_limit_per_minute > 0),
          status text not null default 'active' check (status in ('active', 'suspended')),
          created_at timestamptz not null default now(),
          updated_at timestamptz not null default now()
        );

        create table api_keys (
          key_id uuid primary key default gen_random_uuid(),
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          name text not null default 'default',
          display_prefix text not null,
          key_hash bytea not null unique,
          created_at timestamptz not null default now(),
          revoked_at timestamptz
        );
        create index api_keys_tenant on api_keys (tenant_id);

        create table audit_log (
          audit_id bigint generated always as identity primary key,
          tenant_id uuid not null,
          actor text not null,
          action text not null,
          target text,
          detail jsonb not null default '{}'::jsonb,
          created_at timestamptz not null default now()
        );
        create index audit_log_tenant_time on audit_log (tenant_id, created_at);

        create function audit_log_append_only() returns trigger
        language plpgsql as $$
        begin
          raise exception 'audit_log is append-only (% refused)', tg_op
            using errcode = 'insufficient_privilege';
        end $$;
        create trigger audit_log_no_update before update or delete on audit_log
          for each row execute function audit_log_append_only();
        create trigger audit_log_no_truncate before truncate on audit_log
          for each statement execute function audit_log_append_only();
        """
    )
    tenant_rls("tenants", "select, insert, update")
    tenant_rls("api_keys", "select, insert, update")
    tenant_rls("audit_log", "select, insert")
    op.execute(
        """
        grant usage on schema public to chatlake_app;
        grant execute on function current_tenant_id() to chatlake_app;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        drop table if exists audit_log, api_keys, tenants cascade;
        drop function if exists audit_log_append_only();
        drop function if exists current_tenant_id();
        """
    )
