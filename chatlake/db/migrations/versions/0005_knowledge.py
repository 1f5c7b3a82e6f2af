"""Knowledge documents and their embedded chunks (pgvector HNSW + full-text), per tenant.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from alembic import op

from chatlake.db.migrations.rls import tenant_rls

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create extension if not exists vector;

        create table knowledge_documents (
          document_id uuid primary key default gen_random_uuid(),
          tenant_id uuid not null references tenants (tenant_id) on delete cascade,
          title text not null,
          text text not null,
          created_at timestamptz not null default now()
        );
        create index knowledge_documents_tenant on knowledge_documents (tenant_id);

        create table knowledge_chunks (
          document_id uuid not null references knowledge_documents (document_id)
            on delete cascade,
          chunk_no integer not null,
          tenant_id uuid not null,
          title text not null,
          text text not null,
          embedding vector(256) not null,
          search tsvector generated always as (to_tsvector('simple', title || ' ' || text)) stored,
          primary key (document_id, chunk_no)
        );
        create index knowledge_chunks_tenant on knowledge_chunks (tenant_id);
        create index knowledge_chunks_embedding on knowledge_chunks
          using hnsw (embedding vector_cosine_ops);
        create index knowledge_chunks_search on knowledge_chunks using gin (search);
        """
    )
    for table in ("knowledge_documents", "knowledge_chunks"):
        tenant_rls(table, "select, insert, delete")


def downgrade() -> None:
    op.execute("drop table if exists knowledge_chunks, knowledge_documents")
