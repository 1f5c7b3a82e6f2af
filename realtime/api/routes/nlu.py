"""Intents and the intent models of the calling tenant: edit, train, parse, activate."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from nlu.entities import TenantEntity
from realtime.api.deps import PlatformDep, TenantDep
from realtime.api.errors import ApiError
from realtime.api.schemas import (
    INTENT_NAME_PATTERN,
    LANGUAGE_PATTERN,
    EntityIn,
    EntityList,
    EntityOut,
    IntentIn,
    IntentList,
    IntentOut,
    LabelIn,
    LabelOut,
    ModelList,
    ModelOut,
    ParseIn,
    ParseOut,
    ReviewItem,
    ReviewList,
    TrainOut,
    error_responses,
)
from realtime.engine.intents import TrainingError

router = APIRouter(prefix="/v1", tags=["nlu"])
ERRORS = error_responses(401, 404, 422)
_NAME = re.compile(INTENT_NAME_PATTERN)


def _intent_name(name: str) -> str:
    if not _NAME.match(name):
        raise ApiError(422, "intent names are 1 to 100 letters, digits, '_', '.' or '-'")
    return name


@router.get("/intents", response_model=IntentList, responses=ERRORS)
async def list_intents(tenant: TenantDep, platform: PlatformDep) -> IntentList:
    rows = await platform.intents.list_intents(tenant.tenant_id)
    return IntentList(intents=[IntentOut(**row) for row in rows])


@router.put("/intents/{name}", response_model=IntentOut, responses=ERRORS)
async def put_intent(
    name: str, body: IntentIn, tenant: TenantDep, platform: PlatformDep
) -> IntentOut:
    """Create or replace an intent's examples (for one language, English by default)."""
    saved = await platform.intents.put_intent(
        tenant.tenant_id, _intent_name(name), body.examples, body.language, tenant.actor
    )
    return IntentOut(**saved)


@router.delete(
    "/intents/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    responses=ERRORS,
)  # fmt: skip
async def delete_intent(
    name: str,
    tenant: TenantDep,
    platform: PlatformDep,
    language: Annotated[str | None, Query(pattern=LANGUAGE_PATTERN)] = None,
) -> Response:
    await platform.intents.delete_intent(
        tenant.tenant_id, _intent_name(name), language, tenant.actor
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/nlu/train", response_model=TrainOut, responses=ERRORS)
async def train(tenant: TenantDep, platform: PlatformDep) -> dict[str, Any]:
    """Train a model from the tenant's intents; it is live when this returns."""
    try:
        return await platform.intents.train(tenant.tenant_id, tenant.actor)
    except TrainingError as exc:
        raise ApiError(422, str(exc), code="cannot_train") from None


@router.post("/nlu/parse", response_model=ParseOut, responses=ERRORS)
async def parse(body: ParseIn, tenant: TenantDep, platform: PlatformDep) -> dict[str, Any]:
    """Intent (null when out of scope), ranking, entities and language of a text."""
    return await platform.intents.parse(tenant.tenant_id, body.text, body.language)


@router.get("/nlu/review", response_model=ReviewList, responses=ERRORS)
async def review_queue(
    tenant: TenantDep,
    platform: PlatformDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ReviewList:
    """Recent utterances the live model was unsure of, that got a fallback reply or that
    a handoff followed: de-duplicated, PII-masked, most frequent first (built by the
    pipelines from the lake; `chatlake pipeline run` refreshes it)."""
    from chatlake.subject_keys import open_texts

    rows = await platform.intents.review_items(tenant.tenant_id, limit)
    texts = await asyncio.to_thread(
        open_texts, platform.redis_sync, tenant.tenant_id,
        [(row["user_key"], row["text_sealed"]) for row in rows],
    )  # fmt: skip
    return ReviewList(
        items=[
            ReviewItem(text=text, **{k: v for k, v in row.items()
                                     if k not in ("user_key", "text_sealed")})
            for row, text in zip(rows, texts, strict=True)
            if text is not None  # its subject was erased since the queue was built
        ]
    )  # fmt: skip


@router.post(
    "/nlu/labels", status_code=status.HTTP_201_CREATED, response_model=LabelOut, responses=ERRORS
)
async def label(body: LabelIn, tenant: TenantDep, platform: PlatformDep) -> dict[str, Any]:
    """Label a review item with an existing intent, a new one, or `out_of_scope`; the
    next retraining learns it (if the promotion gate lets the candidate through)."""
    return await platform.intents.label(
        tenant.tenant_id, body.event_id, body.intent, body.language, tenant.actor
    )


@router.get("/nlu/models", response_model=ModelList, responses=ERRORS)
async def list_models(tenant: TenantDep, platform: PlatformDep) -> ModelList:
    models = await platform.intents.list_models(tenant.tenant_id)
    return ModelList(models=[ModelOut(**m) for m in models])


@router.post("/nlu/models/{version}/activate", response_model=ModelList, responses=ERRORS)
async def activate(version: str, tenant: TenantDep, platform: PlatformDep) -> ModelList:
    """Make a model version the live one (forward or back); no restart needed."""
    if not version.isdigit():
        raise ApiError(404, f"model version {version} not found")
    await platform.intents.activate(tenant.tenant_id, int(version), tenant.actor)
    models = await platform.intents.list_models(tenant.tenant_id)
    return ModelList(models=[ModelOut(**m) for m in models])


@router.get("/entities", response_model=EntityList, responses=ERRORS)
async def list_entities(tenant: TenantDep, platform: PlatformDep) -> EntityList:
    entities = await platform.intents.list_entities(tenant.tenant_id)
    return EntityList(
        entities=[EntityOut(name=e.name, pattern=e.pattern, lookup=e.lookup) for e in entities]
    )


@router.put("/entities/{name}", response_model=EntityOut, responses=ERRORS)
async def put_entity(
    name: str, body: EntityIn, tenant: TenantDep, platform: PlatformDep
) -> EntityOut:
    """A regular expression or a lookup list; it applies from the next training."""
    entity = TenantEntity(_intent_name(name), body.pattern, body.lookup)
    await platform.intents.put_entity(tenant.tenant_id, entity, tenant.actor)
    return EntityOut(name=entity.name, pattern=entity.pattern, lookup=entity.lookup)


@router.delete(
    "/entities/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    responses=ERRORS,
)  # fmt: skip
async def delete_entity(name: str, tenant: TenantDep, platform: PlatformDep) -> Response:
    await platform.intents.delete_entity(tenant.tenant_id, _intent_name(name), tenant.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
