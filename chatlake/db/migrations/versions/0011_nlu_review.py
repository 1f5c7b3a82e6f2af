"""The intent-retraining loop: the review queue, human labels, and model versions with a
status (promoted, rejected) and the gate's decision.

Review items hold an end user's (PII-masked) utterance: it is stored sealed under the
subject's own key, which lives in Redis and is destroyed on erasure, so the dead tuples
and WAL records PostgreSQL keeps for a while hold nothing readable. Labels hold no text:
training joins them to silver by event id.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table nlu_review_items (
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          event_id text not null,
          user_key text not null,
          text_sealed bytea not null,
          text_digest text not null,
          language text,
          intent text,
          confidence double precision,
          reasons text[] not null,
          occurrences integer not null check (occurrences > 0),
          last_seen timestamptz not null,
          built_at timestamptz not null default now(),
          primary key (tenant_id, event_id)
        );
        create index nlu_review_items_rank on nlu_review_items (tenant_id, occurrences desc);
        create index nlu_review_items_subject on nlu_review_items (tenant_id, user_key);

        create table nlu_labels (
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          event_id text not null,
          intent text not null check (intent ~ '^[A-Za-z0-9_.-]{1,100}$'),
          language text,
          user_key text not null,
          text_digest text not null,
          labelled_by text not null,
          created_at timestamptz not null default now(),
          primary key (tenant_id, event_id)
        );
        create index nlu_labels_subject on nlu_labels (tenant_id, user_key);
        create index nlu_labels_created on nlu_labels (created_at);

        alter table nlu_models
          add column status text not null default 'promoted'
            check (status in ('promoted', 'rejected')),
          add column gate jsonb;
        """
    )
    for table in ("nlu_review_items", "nlu_labels"):
        tenant_rls(table, "select, insert, update, delete")


def downgrade() -> None:
    op.execute(
        """
        drop table if exists nlu_labels, nlu_review_items;
        alter table nlu_models drop column if exists status, drop column if exists gate;
        """
    )
