"""Per-tenant retention: how many days of conversations the platform keeps.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        alter table tenants add column retention_days integer not null default 90
          check (retention_days between 1 and 36500);
        """
    )


def downgrade() -> None:
    op.execute("alter table tenants drop column if exists retention_days")
