"""Erasure requests and their certificates. The subject is kept only as a digest.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table erasure_requests (
          request_id text primary key,
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          subject_digest text not null,
          status text not null check (status in ('running', 'completed', 'failed')),
          requested_by text not null,
          created_at timestamptz not null default now(),
          finished_at timestamptz,
          certificate jsonb
        );
        create index erasure_requests_tenant on erasure_requests (tenant_id, created_at);
        """
    )
    tenant_rls("erasure_requests", "select, insert, update")


def downgrade() -> None:
    op.execute("drop table if exists erasure_requests")
