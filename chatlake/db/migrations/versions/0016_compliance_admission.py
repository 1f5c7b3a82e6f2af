"""Compliance admission: how many erasures and exports are outstanding, and which are alive.

A request is admitted only while its tenant and the platform have fewer than their bound
of jobs queued or running (chatlake/jobs.py). The tenant's are counted by the API under
row-level security; the platform's through `compliance_jobs_outstanding`, a SECURITY
DEFINER function that returns one number and nothing of any tenant's rows.

A job's process holds the session advisory lock (0x636C0005, hashtext(job_id)) from before
it waits for its slot until it ends (chatlake/jobs.py, `JOB_LOCKS`), so a job whose
process was killed drops it at once: `compliance_job_alive` tells. A job not alive and
older than the grace the caller gives (the time a launched process takes to lock) is
abandoned and no longer counts.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create function compliance_job_alive(p_job_id text) returns boolean
        language sql volatile set search_path = pg_catalog, pg_temp
        as $$
          select exists (
            select 1 from pg_locks
            where locktype = 'advisory' and granted and objsubid = 2
              and database = (select oid from pg_database where datname = current_database())
              and classid = 1668022277::oid  -- 0x636C0005, JOB_LOCKS in chatlake/jobs.py
              and objid = (hashtext(p_job_id)::bigint & 4294967295)::oid)
        $$;

        create function compliance_jobs_outstanding(p_grace interval) returns bigint
        language sql volatile security definer set search_path = public, pg_temp
        as $$
          select count(*) from compliance_jobs
          where status in ('queued', 'running')
            and (created_at > now() - p_grace or compliance_job_alive(job_id))
        $$;

        revoke all on function compliance_jobs_outstanding(interval) from public;
        grant execute on function compliance_job_alive(text) to chatlake_app;
        grant execute on function compliance_jobs_outstanding(interval) to chatlake_app;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        drop function if exists compliance_jobs_outstanding(interval);
        drop function if exists compliance_job_alive(text);
        """
    )
