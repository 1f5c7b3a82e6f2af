"""The tenant's model chain: LLM provider tiers, credentials sealed (see chatlake.secrets).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table model_chains (
          tenant_id uuid primary key references tenants (tenant_id) on delete cascade,
          tiers jsonb not null check (jsonb_typeof(tiers) = 'array'),
          updated_at timestamptz not null default now()
        );
        """
    )
    tenant_rls("model_chains", "select, insert, update")


def downgrade() -> None:
    op.execute("drop table if exists model_chains")
