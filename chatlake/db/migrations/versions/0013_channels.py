"""Channels: each tenant's configuration per channel (secrets sealed under the master key
with the tenant and channel as context), and the identity links that let one end user
(`user_id`, the data subject) reach the bot from several channels.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table channel_configs (
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          channel text not null check (channel in
            ('web', 'whatsapp', 'messenger', 'slack', 'teams', 'twilio')),
          enabled boolean not null default true,
          sealed_secrets jsonb not null default '{}'::jsonb,
          options jsonb not null default '{}'::jsonb,
          updated_at timestamptz not null default now(),
          primary key (tenant_id, channel)
        );

        -- keyed by the subject's pseudonym (user_key) as well, so that erasure finds
        -- every link of the subject without knowing the channels' ids
        create table channel_identities (
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          channel text not null,
          external_id text not null,
          user_id text not null,
          user_key text not null,
          created_at timestamptz not null default now(),
          primary key (tenant_id, channel, external_id)
        );
        create index channel_identities_user on channel_identities (tenant_id, user_key);
        """
    )
    for table in ("channel_configs", "channel_identities"):
        tenant_rls(table, "select, insert, update, delete")


def downgrade() -> None:
    op.execute("drop table if exists channel_identities, channel_configs")
