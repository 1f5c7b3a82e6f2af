"""Intents with their examples, and the versioned intent models trained from them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table intents (
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          name text not null check (name ~ '^[A-Za-z0-9_.-]{1,100}$'),
          language text not null check (language ~ '^[a-z]{2}$'),
          examples jsonb not null check (jsonb_typeof(examples) = 'array'),
          updated_at timestamptz not null default now(),
          primary key (tenant_id, name, language)
        );

        create table nlu_models (
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          version integer not null check (version > 0),
          active boolean not null default false,
          artifact_uri text not null,
          metrics jsonb not null default '{}'::jsonb,
          lineage jsonb not null default '{}'::jsonb,
          created_at timestamptz not null default now(),
          primary key (tenant_id, version)
        );
        create unique index nlu_models_one_active on nlu_models (tenant_id) where active;
        """
    )
    tenant_rls("intents", "select, insert, update, delete")
    tenant_rls("nlu_models", "select, insert, update")


def downgrade() -> None:
    op.execute("drop table if exists nlu_models, intents cascade;")
