"""The calling tenant's knowledge documents, and search over them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from realtime.api.deps import PlatformDep, TenantDep
from realtime.api.errors import ApiError
from realtime.api.schemas import (
    DocumentCreated,
    DocumentIn,
    DocumentList,
    DocumentOut,
    SearchResult,
    SearchResults,
    error_responses,
)

router = APIRouter(prefix="/v1/knowledge", tags=["knowledge"])
ERRORS = error_responses(401, 404, 422)


@router.post(
    "/documents", status_code=status.HTTP_201_CREATED, response_model=DocumentCreated,
    responses=ERRORS,
)  # fmt: skip
async def add_document(body: DocumentIn, tenant: TenantDep, platform: PlatformDep) -> Any:
    """Split into chunks, embed (offline), and store them for search and answers."""
    try:
        return await platform.knowledge.add_document(tenant.tenant_id, body.title, body.text)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None


@router.get("/documents", response_model=DocumentList, responses=ERRORS)
async def list_documents(tenant: TenantDep, platform: PlatformDep) -> DocumentList:
    documents = await platform.knowledge.list_documents(tenant.tenant_id)
    return DocumentList(documents=[DocumentOut(**d) for d in documents])


@router.delete(
    "/documents/{document_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    responses=ERRORS,
)  # fmt: skip
async def delete_document(document_id: str, tenant: TenantDep, platform: PlatformDep) -> Response:
    """Delete a document with its chunks and their embeddings."""
    await platform.knowledge.delete_document(tenant.tenant_id, document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/search", response_model=SearchResults, responses=ERRORS)
async def search(
    tenant: TenantDep,
    platform: PlatformDep,
    q: Annotated[str, Query(min_length=1, max_length=2000)],
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> SearchResults:
    """Hybrid search (meaning and words) over the tenant's chunks, best first."""
    results = await platform.knowledge.search(tenant.tenant_id, q, limit)
    return SearchResults(results=[SearchResult(**r) for r in results])
