"""A tamper-evident audit log: each row carries the SHA-256 of its predecessor's hash and
its own content, chained per tenant (`chatlake audit verify` recomputes the chains).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        r"""
        alter table audit_log add column prev_hash bytea, add column row_hash bytea;

        -- What a row's hash covers, as text that does not depend on session settings.
        create function audit_log_canonical(entry audit_log) returns text
        language sql immutable as $$
          select concat_ws(E'\x1f', entry.audit_id::text, entry.tenant_id::text, entry.actor,
                           entry.action, coalesce(entry.target, ''), entry.detail::text,
                           (extract(epoch from entry.created_at) * 1000000)::bigint::text)
        $$;

        -- The head of each tenant's chain. Writers take turns on it (the row lock is held
        -- until the inserting transaction ends), so rows chain in commit order whatever
        -- order their ids were drawn in.
        create table audit_heads (
          tenant_id uuid primary key,
          head bytea not null
        );
        revoke all on audit_heads from public;

        create function audit_log_chain() returns trigger
        language plpgsql security definer set search_path = public, pg_temp as $$
        declare previous bytea;
        begin
          insert into audit_heads (tenant_id, head) values (new.tenant_id, ''::bytea)
            on conflict (tenant_id) do nothing;
          select head into previous from audit_heads where tenant_id = new.tenant_id
            for update;
          new.prev_hash := previous;
          new.row_hash := sha256(new.prev_hash || convert_to(audit_log_canonical(new), 'UTF8'));
          update audit_heads set head = new.row_hash where tenant_id = new.tenant_id;
          return new;
        end $$;
        create trigger audit_log_chain before insert on audit_log
          for each row execute function audit_log_chain();

        -- Rows written before the chain existed join it, in id order per tenant.
        alter table audit_log disable trigger audit_log_no_update;
        do $$
        declare r audit_log; previous bytea; current_tenant uuid;
        begin
          for r in select * from audit_log order by tenant_id, audit_id loop
            if current_tenant is distinct from r.tenant_id then
              previous := ''::bytea;
              current_tenant := r.tenant_id;
            end if;
            update audit_log
              set prev_hash = previous,
                  row_hash = sha256(previous || convert_to(audit_log_canonical(r), 'UTF8'))
              where audit_id = r.audit_id
              returning row_hash into previous;
            insert into audit_heads values (r.tenant_id, previous)
              on conflict (tenant_id) do update set head = excluded.head;
          end loop;
        end $$;
        alter table audit_log enable trigger audit_log_no_update;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        drop trigger audit_log_chain on audit_log;
        drop function audit_log_chain();
        drop table audit_heads;
        drop function audit_log_canonical(audit_log);
        alter table audit_log drop column prev_hash, drop column row_hash;
        """
    )
