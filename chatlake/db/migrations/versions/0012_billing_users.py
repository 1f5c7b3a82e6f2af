"""Invoices with their line items (pipelines/billing.py), and the tenant users who sign in
to the dashboards (passwords hashed with argon2id; admins' TOTP secrets sealed under the
master key).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table invoices (
          invoice_id text primary key,
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          month date not null check (extract(day from month) = 1),
          plan text not null,
          currency text not null,
          status text not null check (status in ('draft', 'final')),
          usage jsonb not null,
          prices jsonb not null,
          total numeric(14, 2) not null,
          computed_at timestamptz not null default now(),
          finalized_at timestamptz,
          unique (tenant_id, month)
        );

        create table invoice_lines (
          invoice_id text not null references invoices (invoice_id) on delete cascade,
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          line_no integer not null,
          item text not null,
          description text not null,
          quantity bigint not null,
          unit_amount numeric not null,
          amount numeric(14, 2) not null,
          metadata jsonb not null default '{}'::jsonb,
          primary key (invoice_id, line_no)
        );

        create table users (
          user_id uuid primary key default gen_random_uuid(),
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          email text not null unique check (email = lower(email) and email like '%_@_%'),
          role text not null check (role in ('analyst', 'admin')),
          password_hash text not null,
          totp_sealed text,
          created_at timestamptz not null default now(),
          last_login_at timestamptz,
          check (role <> 'admin' or totp_sealed is not null)
        );
        create index users_tenant on users (tenant_id);

        -- a final invoice and its lines are never changed or removed, whoever asks
        create function invoices_final_is_final() returns trigger
        language plpgsql as $$
        begin
          if old.status = 'final' then
            raise exception 'invoice % is final (% refused)', old.invoice_id, tg_op
              using errcode = 'insufficient_privilege';
          end if;
          if tg_op = 'DELETE' then
            return old;
          end if;
          return new;
        end $$;
        create trigger invoices_final before update or delete on invoices
          for each row execute function invoices_final_is_final();

        create function invoice_lines_final_is_final() returns trigger
        language plpgsql as $$
        declare
          invoice text;
        begin
          if tg_op = 'INSERT' then
            invoice := new.invoice_id;
          else
            invoice := old.invoice_id;
          end if;
          if exists (select 1 from invoices where invoice_id = invoice and status = 'final') then
            raise exception 'invoice % is final (% refused)', invoice, tg_op
              using errcode = 'insufficient_privilege';
          end if;
          if tg_op = 'DELETE' then
            return old;
          end if;
          return new;
        end $$;
        create trigger invoice_lines_final before insert or update or delete on invoice_lines
          for each row execute function invoice_lines_final_is_final();
        """
    )
    for table in ("invoices", "invoice_lines", "users"):
        tenant_rls(table, "select, insert, update, delete")


def downgrade() -> None:
    op.execute(
        """
        drop table if exists invoice_lines, invoices, users;
        drop function if exists invoices_final_is_final(), invoice_lines_final_is_final();
        """
    )
