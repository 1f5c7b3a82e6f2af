"""Knowledge answers: tenants' documents, chunked and embedded into pgvector, searched by
meaning and by words at once.

Chunks are embedded with the same offline wordllama model as the intent classifier (256
dimensions, shipped in its wheel). A search takes the nearest chunks by cosine distance
(HNSW index) and the best full-text matches, and scores each candidate
`VECTOR_WEIGHT * cosine + TEXT_WEIGHT * rank / (rank + TEXT_HALF)`. Row-level security
keeps every query inside the tenant; pgvector's iterative index scan keeps the nearest-
neighbour search returning enough rows after that filter.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np

from chatlake.db import AppPool, tenant_transaction
from chatlake.errors import NotFound
from nlu.classifier import embed
from realtime.engine.tenant_cache import TenantCache

CHUNK_CHARS = 600
VECTOR_WEIGHT = 0.8
TEXT_WEIGHT = 0.2
TEXT_HALF = 0.1
ANSWER_THRESHOLD = 0.3  # below it the knowledge tier declines and the chain moves on
CANDIDATES = 20


def chunk_text(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Paragraphs, packed into chunks of about `size` characters (long ones split by
    sentence), so that a chunk is an answer rather than a fragment."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        paragraph = " ".join(paragraph.split())
        if len(paragraph) <= size:
            pieces.append(paragraph)
            continue
        pieces.extend(s for s in re.split(r"(?<=[.!?])\s+", paragraph) if s)
    chunks: list[str] = []
    for piece in filter(None, pieces):
        if chunks and len(chunks[-1]) + 1 + len(piece) <= size:
            chunks[-1] += " " + piece
        else:
            chunks.append(piece[: size * 2])
    return chunks


def _vector(values: np.ndarray) -> str:
    return "[" + ",".join(f"{v:.6f}" for v in values) + "]"


HAS_DOCUMENTS_TTL = 5.0  # seconds another replica may take to notice a first upload


class KnowledgeBase:
    def __init__(self, pool: AppPool) -> None:
        self.pool = pool
        # Spares the chain a PostgreSQL round trip for the many tenants without documents.
        self._has_documents: TenantCache[bool] = TenantCache(HAS_DOCUMENTS_TTL)

    async def has_documents(self, tenant_id: str) -> bool:
        return await self._has_documents.get(tenant_id, self._count_documents)

    async def _count_documents(self, tenant_id: str) -> bool:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute("select exists (select 1 from knowledge_documents) as e")
            row = await cur.fetchone()
        return bool(row and row["e"])

    async def add_document(self, tenant_id: str, title: str, text: str) -> dict[str, Any]:
        chunks = chunk_text(text)
        if not chunks:
            raise ValueError("the document has no text")
        vectors = await asyncio.to_thread(embed, [f"{title}\n{chunk}" for chunk in chunks])
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """insert into knowledge_documents (tenant_id, title, text)
                   values (%s, %s, %s) returning document_id""",
                (tenant_id, title, text),
            )
            row = await cur.fetchone()
            assert row is not None
            document_id = str(row["document_id"])
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    """insert into knowledge_chunks
                       (document_id, chunk_no, tenant_id, title, text, embedding)
                       values (%s, %s, %s, %s, %s, %s::vector)""",
                    [
                        (document_id, i, tenant_id, title, chunk, _vector(vector))
                        for i, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True))
                    ],
                )
        self._has_documents.drop(tenant_id)
        return {"document_id": document_id, "title": title, "chunks": len(chunks)}

    async def list_documents(self, tenant_id: str) -> list[dict[str, Any]]:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """select d.document_id, d.title, d.created_at, count(c.chunk_no) as chunks
                   from knowledge_documents d left join knowledge_chunks c using (document_id)
                   group by d.document_id order by d.created_at"""
            )
            rows = await cur.fetchall()
        return [
            {
                "document_id": str(r["document_id"]),
                "title": r["title"],
                "chunks": r["chunks"],
                "created_at": r["created_at"].isoformat(),
            }
            for r in rows
        ]

    async def delete_document(self, tenant_id: str, document_id: str) -> None:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                "delete from knowledge_documents where document_id::text = %s", (document_id,)
            )
            if cur.rowcount == 0:
                raise NotFound(f"document {document_id} not found")
        self._has_documents.drop(tenant_id)

    async def search(self, tenant_id: str, query: str, limit: int = 5) -> list[dict[str, Any]]:
        if not query.strip():
            return []
        [vector] = await asyncio.to_thread(embed, [query])
        q = _vector(vector)
        async with tenant_transaction(self.pool, tenant_id) as conn:
            # Keep scanning the HNSW index until enough rows pass the tenant filter.
            await conn.execute("set local hnsw.iterative_scan = relaxed_order")
            cur = await conn.execute(
                """
                with by_meaning as (
                  select document_id, chunk_no, 1 - (embedding <=> %(q)s::vector) as cosine
                  from knowledge_chunks
                  order by embedding <=> %(q)s::vector
                  limit %(n)s
                ),
                by_words as (
                  select document_id, chunk_no,
                         ts_rank_cd(search, plainto_tsquery('simple', %(text)s)) as rank
                  from knowledge_chunks
                  where search @@ plainto_tsquery('simple', %(text)s)
                  order by rank desc
                  limit %(n)s
                ),
                candidates as (
                  select document_id, chunk_no from by_meaning
                  union select document_id, chunk_no from by_words
                )
                select c.document_id, k.title, k.text,
                       1 - (k.embedding <=> %(q)s::vector) as cosine,
                       coalesce(w.rank, 0) as rank
                from candidates c
                join knowledge_chunks k using (document_id, chunk_no)
                left join by_words w using (document_id, chunk_no)
                """,
                {"q": q, "text": query, "n": CANDIDATES},
            )
            rows = await cur.fetchall()
        results = [
            {
                "document_id": str(r["document_id"]),
                "title": r["title"],
                "text": r["text"],
                "score": round(
                    VECTOR_WEIGHT * float(r["cosine"])
                    + TEXT_WEIGHT * float(r["rank"]) / (float(r["rank"]) + TEXT_HALF),
                    4,
                ),
            }
            for r in rows
        ]
        results.sort(key=lambda r: -r["score"])
        return results[:limit]

    async def answer(self, tenant_id: str, question: str) -> dict[str, Any] | None:
        """The best chunk if it scores at least ANSWER_THRESHOLD, else None (decline)."""
        if not await self.has_documents(tenant_id):
            return None
        results = await self.search(tenant_id, question, limit=1)
        if results and results[0]["score"] >= ANSWER_THRESHOLD:
            return results[0]
        return None
