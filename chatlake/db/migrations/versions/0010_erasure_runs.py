"""What carries out an erasure request: the Dagster job (with its run id) or a process.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        alter table erasure_requests
          add column executor text check (executor in ('dagster', 'process', 'cli')),
          add column run_id text;
        """
    )


def downgrade() -> None:
    op.execute("alter table erasure_requests drop column executor, drop column run_id")
