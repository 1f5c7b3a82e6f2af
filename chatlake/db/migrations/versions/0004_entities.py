"""Tenant entities: regular expressions and lookup lists, used by the intent models.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table entities (
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          name text not null check (name ~ '^[A-Za-z0-9_.-]{1,100}$'),
          pattern text,
          lookup jsonb,
          updated_at timestamptz not null default now(),
          primary key (tenant_id, name),
          check ((pattern is null) <> (lookup is null))
        );
        """
    )
    tenant_rls("entities", "select, insert, update, delete")


def downgrade() -> None:
    op.execute("drop table if exists entities")
