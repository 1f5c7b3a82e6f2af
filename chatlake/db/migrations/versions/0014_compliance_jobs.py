"""Compliance jobs: erasures and exports queued (one running per tenant, a bounded number
platform-wide), exports as jobs of their own, and which digest scheme names a subject.

`compliance_jobs` records every erasure and export a tenant asked for, with its status
(`queued` until a slot is free, then `running`, `completed` or `failed`); an export's row
also says where its bundle is. The slots themselves are PostgreSQL advisory locks held by
the running job's session (chatlake/jobs.py), so a killed job frees its slot at once.

`subject_digest_scheme` says how `subject_digest` was made: `sha256` (the rows before this
revision: unkeyed, SHA-256 of tenant and user id) or `hmac-sha256` (keyed, see
chatlake/pii.py).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table compliance_jobs (
          job_id text primary key,
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          kind text not null check (kind in ('erasure', 'export')),
          status text not null default 'queued'
            check (status in ('queued', 'running', 'completed', 'failed')),
          subject_digest text not null,
          subject_digest_scheme text not null,
          requested_by text not null,
          executor text,
          run_id text,
          created_at timestamptz not null default now(),
          started_at timestamptz,
          finished_at timestamptz,
          result jsonb,
          error text
        );
        create index compliance_jobs_tenant on compliance_jobs (tenant_id, created_at);
        create index compliance_jobs_waiting on compliance_jobs (status)
          where status in ('queued', 'running');
        """
    )
    tenant_rls("compliance_jobs", "select, insert, update")
    op.execute(
        """
        alter table erasure_requests drop constraint erasure_requests_status_check;
        alter table erasure_requests add constraint erasure_requests_status_check
          check (status in ('queued', 'running', 'completed', 'failed'));
        alter table erasure_requests
          add column subject_digest_scheme text not null default 'sha256',
          add column started_at timestamptz;

        -- a version trained on an erased subject's label: its files deleted, never live again
        alter table nlu_models drop constraint nlu_models_status_check;
        alter table nlu_models add constraint nlu_models_status_check
          check (status in ('promoted', 'rejected', 'retired'));
        """
    )


def downgrade() -> None:
    op.execute(
        """
        drop table if exists compliance_jobs;
        update nlu_models set status = 'rejected' where status = 'retired';
        alter table nlu_models drop constraint nlu_models_status_check;
        alter table nlu_models add constraint nlu_models_status_check
          check (status in ('promoted', 'rejected'));
        update erasure_requests set status = 'running' where status = 'queued';
        alter table erasure_requests drop constraint erasure_requests_status_check;
        alter table erasure_requests add constraint erasure_requests_status_check
          check (status in ('running', 'completed', 'failed'));
        alter table erasure_requests drop column subject_digest_scheme,
                                     drop column started_at;
        """
    )
