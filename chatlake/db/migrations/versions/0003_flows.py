"""Conversation flows: published versions, the tenant's live version and its A/B split.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table flows (
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          version integer not null check (version > 0),
          document jsonb not null,
          created_by text not null,
          created_at timestamptz not null default now(),
          primary key (tenant_id, version)
        );
        alter table flows enable row level security;
        create policy tenant_isolation on flows
          using (tenant_id = current_tenant_id())
          with check (tenant_id = current_tenant_id());
        grant select, insert on flows to chatlake_app;

        alter table tenants add column flow_version integer;
        alter table tenants add column flow_experiment jsonb;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        alter table tenants drop column if exists flow_experiment;
        alter table tenants drop column if exists flow_version;
        drop table if exists flows;
        """
    )
