"""Conversation flows: published versions, the tenant's live version and its A/B split.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

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
        """
    )
    tenant_rls("flows", "select, insert")
    op.execute(
        """
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
