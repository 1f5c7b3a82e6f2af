"""The API's side of intents: the tenant's intents, entities, review queue and labels in
PostgreSQL, training and activating through the model store, and parsing.

Training reads the tenant's intents and fits an `IntentModel` in a worker thread; the model
store (nlu/models.py, the one writer of model versions, which the retraining job uses too)
saves and records it with its metrics and lineage (a digest of the examples it learnt
from), in a worker thread as well, and makes it live. This process keeps the versions it
serves in memory (`CACHED_MODELS`); which version is live it reads from Redis per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from typing import Any

import orjson
from redis.asyncio import Redis

from chatlake.db import AppPool, tenant_transaction
from chatlake.errors import NotFound
from chatlake.keyspace import TenantKeyspace
from chatlake.tenants import record_audit
from nlu.classifier import IntentModel
from nlu.entities import TenantEntity, extract_entities
from nlu.language import detect_language
from nlu.models import IntentModels, publish

CACHED_MODELS = 64


class TrainingError(ValueError):
    """The tenant's intents cannot make a model (too few intents or examples)."""


class IntentRegistry:
    def __init__(self, pool: AppPool, redis: Redis, lake_root: str) -> None:
        self.pool = pool
        self.redis = redis
        url = pool.conninfo  # open_app_pool's URL: the app role's
        assert isinstance(url, str)
        # blocking (run in worker threads), on connections of its own to the pool's database
        self.store = IntentModels(url, lake_root)
        self._models: OrderedDict[tuple[str, int], IntentModel] = OrderedDict()
        self._training: dict[str, asyncio.Lock] = {}

    # --- intents -----------------------------------------------------------------------

    async def list_intents(self, tenant_id: str) -> list[dict[str, Any]]:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                "select name, language, examples, updated_at from intents order by name, language"
            )
            rows = await cur.fetchall()
        return [{**row, "updated_at": row["updated_at"].isoformat()} for row in rows]

    async def put_intent(
        self, tenant_id: str, name: str, examples: list[str], language: str, actor: str
    ) -> dict[str, Any]:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """insert into intents (tenant_id, name, language, examples)
                   values (%s, %s, %s, %s)
                   on conflict (tenant_id, name, language)
                   do update set examples = excluded.examples, updated_at = now()
                   returning updated_at""",
                (tenant_id, name, language, orjson.dumps(examples).decode()),
            )
            row = await cur.fetchone()
            assert row is not None
            await record_audit(
                conn, tenant_id, actor, "intent.saved", name,
                {"language": language, "examples": len(examples)},
            )  # fmt: skip
        return {
            "name": name,
            "language": language,
            "examples": examples,
            "updated_at": row["updated_at"].isoformat(),
        }

    async def delete_intent(
        self, tenant_id: str, name: str, language: str | None, actor: str
    ) -> None:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                "delete from intents where name = %s and (%s::text is null or language = %s)",
                (name, language, language),
            )
            if cur.rowcount == 0:
                raise NotFound(f"intent {name} not found")
            await record_audit(conn, tenant_id, actor, "intent.deleted", name)

    # --- entities ----------------------------------------------------------------------

    async def list_entities(self, tenant_id: str) -> list[TenantEntity]:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute("select name, pattern, lookup from entities order by name")
            rows = await cur.fetchall()
        return [TenantEntity(row["name"], row["pattern"], row["lookup"]) for row in rows]

    async def put_entity(self, tenant_id: str, entity: TenantEntity, actor: str) -> None:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            await conn.execute(
                """insert into entities (tenant_id, name, pattern, lookup) values (%s, %s, %s, %s)
                   on conflict (tenant_id, name) do update
                   set pattern = excluded.pattern, lookup = excluded.lookup, updated_at = now()""",
                (tenant_id, entity.name, entity.pattern,
                 orjson.dumps(entity.lookup).decode() if entity.lookup is not None else None),
            )  # fmt: skip
            await record_audit(conn, tenant_id, actor, "entity.saved", entity.name)

    async def delete_entity(self, tenant_id: str, name: str, actor: str) -> None:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute("delete from entities where name = %s", (name,))
            if cur.rowcount == 0:
                raise NotFound(f"entity {name} not found")
            await record_audit(conn, tenant_id, actor, "entity.deleted", name)

    # --- models ------------------------------------------------------------------------

    async def train(self, tenant_id: str, actor: str) -> dict[str, Any]:
        lock = self._training.setdefault(tenant_id, asyncio.Lock())
        async with lock:  # one training per tenant and process at a time
            intents = await self.list_intents(tenant_id)
            examples = [
                (str(text), row["name"], row["language"])
                for row in intents
                for text in row["examples"]
            ]
            entities = await self.list_entities(tenant_id)
            digest = hashlib.sha256(orjson.dumps(sorted(examples))).hexdigest()
            started = time.perf_counter()
            try:
                model = await asyncio.to_thread(IntentModel.train, examples, entities)
            except ValueError as exc:
                raise TrainingError(str(exc)) from None
            seconds = time.perf_counter() - started
            metrics = {
                "train_seconds": round(seconds, 3),
                "intents": len({(name, lang) for _, name, lang in examples}),
                "examples": len(examples),
                "languages": sorted(model.classifiers),
                "entities": [e.name for e in entities],
                "thresholds": {
                    lang: round(c.threshold, 4) for lang, c in model.classifiers.items()
                },
            }
            lineage = {
                "examples_sha256": digest,
                # the same digest the retraining job computes (no labels here), so the
                # job knows this version saw exactly today's training set
                "training_set_sha256": digest,
                "intents_updated_at": max((r["updated_at"] for r in intents), default=None),
            }
            version = await asyncio.to_thread(
                self.store.record, tenant_id, model, actor=actor, action="nlu.trained",
                metrics=metrics, lineage=lineage, detail=metrics,
            )  # fmt: skip
            self._remember(tenant_id, version, model)
            await self.activate(tenant_id, version, actor)
            return {"model_version": version, "active": True, **metrics, "lineage": lineage}

    async def list_models(self, tenant_id: str) -> list[dict[str, Any]]:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """select version, active, status, gate, metrics, lineage, created_at
                   from nlu_models order by version"""
            )
            rows = await cur.fetchall()
        return [
            {
                "model_version": row["version"],
                "active": row["active"],
                "status": row["status"],
                "gate": row["gate"],
                "metrics": row["metrics"],
                "lineage": row["lineage"],
                "created_at": row["created_at"].isoformat(),
            }
            for row in rows
        ]

    async def activate(self, tenant_id: str, version: int, actor: str) -> None:
        """Make `version` live (NotFound if it never was recorded, or was retired)."""
        await asyncio.to_thread(self.store.activate, tenant_id, version, actor)
        await publish(self.redis, tenant_id, version)

    async def active_version(self, tenant_id: str) -> int | None:
        cached = await self.redis.get(TenantKeyspace(tenant_id).nlu_model)
        if cached is not None:
            return int(cached)
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute("select version from nlu_models where active")
            row = await cur.fetchone()
        if row is None:
            return None
        await publish(self.redis, tenant_id, row["version"])
        return int(row["version"])

    async def model(self, tenant_id: str, version: int) -> IntentModel:
        key = (tenant_id, version)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = await asyncio.to_thread(self.store.load, tenant_id, version)
        self._remember(tenant_id, version, model)
        return model

    def _remember(self, tenant_id: str, version: int, model: IntentModel) -> None:
        self._models[(tenant_id, version)] = model
        while len(self._models) > CACHED_MODELS:
            self._models.popitem(last=False)

    # --- the review queue and labels (built by the pipelines: pipelines/nlu.py) ----------

    async def review_items(self, tenant_id: str, limit: int) -> list[dict[str, Any]]:
        """The queue, most frequent first, texts still sealed (chatlake/subject_keys.py)."""
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """select event_id, user_key, text_sealed, intent, confidence, language,
                          occurrences, reasons, last_seen
                   from nlu_review_items order by occurrences desc, last_seen desc limit %s""",
                (limit,),
            )
            return list(await cur.fetchall())

    async def label(
        self, tenant_id: str, event_id: str, intent: str, language: str | None, actor: str
    ) -> dict[str, Any]:
        """Label a review item (and every equal utterance grouped with it): the next
        retraining learns it. The label keeps no text: training reads it from silver."""
        async with tenant_transaction(self.pool, tenant_id) as conn:
            cur = await conn.execute(
                """select user_key, text_digest, language from nlu_review_items
                   where event_id = %s""",
                (event_id,),
            )
            item = await cur.fetchone()
            if item is None:
                raise NotFound(f"no review item {event_id}")
            language = language or item["language"]
            await conn.execute(
                """insert into nlu_labels (tenant_id, event_id, intent, language, user_key,
                                           text_digest, labelled_by)
                   values (%s, %s, %s, %s, %s, %s, %s)
                   on conflict (tenant_id, event_id) do update
                   set intent = excluded.intent, language = excluded.language,
                       labelled_by = excluded.labelled_by, created_at = now()""",
                (tenant_id, event_id, intent, language, item["user_key"], item["text_digest"],
                 actor),
            )  # fmt: skip
            await conn.execute(
                "delete from nlu_review_items where text_digest = %s", (item["text_digest"],)
            )
            cur = await conn.execute("select 1 from intents where name = %s limit 1", (intent,))
            new_intent = await cur.fetchone() is None
            await record_audit(conn, tenant_id, actor, "nlu.labelled", event_id,
                               {"intent": intent, "new_intent": new_intent})  # fmt: skip
        return {"event_id": event_id, "intent": intent, "language": language,
                "new_intent": new_intent}  # fmt: skip

    # --- parsing -----------------------------------------------------------------------

    async def parse(
        self, tenant_id: str, text: str, language: str | None = None, threshold: float = 0.5
    ) -> dict[str, Any]:
        version = await self.active_version(tenant_id)
        model = await self.model(tenant_id, version) if version is not None else None
        default = model.default_language if model else "en"
        language = language or detect_language(text, default)
        result: dict[str, Any] = {
            "intent": None,
            "ranking": [],
            "entities": extract_entities(text, model.entities if model else ()),
            "language": language,
            "model_version": version,
        }
        if model is not None and text.strip():
            prediction = model.classifier_for(language).predict(text, threshold)
            result["ranking"] = [
                {"name": r.name, "confidence": r.confidence} for r in prediction.ranking
            ]
            if prediction.intent is not None:
                result["intent"] = {
                    "name": prediction.intent.name,
                    "confidence": prediction.intent.confidence,
                }
        return result
