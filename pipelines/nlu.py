"""The intent-retraining loop: review queue, training set, candidate, gate, promotion.

1. The review queue (per tenant, from silver): the recent end-user utterances that the
   live model placed under `CHATLAKE_NLU_REVIEW_CONFIDENCE` (or out of scope), that got
   a fallback reply (the rules tier), or after which the conversation was handed off;
   de-duplicated by their normalised text (a keyed digest), ranked by how often they
   occur, PII-masked (silver's text), and written to PostgreSQL sealed under each
   subject's key (chatlake/subject_keys.py). The API serves it; it never reads the lake.
2. The training set: the tenant's intent examples plus its human labels, whose texts are
   read from silver by event id (labels keep no text), never the model's own guesses. An
   erased or expired utterance is gone from silver, so no later training set holds it.
   Its lineage: the silver table version, the PostgreSQL snapshot, the label event ids,
   the erasure requests completed by then, the code version.
3. The gate: a stable 20% of the training set (by a digest of the text) is held out. The
   candidate recipe (the new training set) and the live recipe (today's examples plus the
   labels the live model learnt from) are both trained without it and scored on it; the
   final candidate (trained on everything) and the live model itself are scored on the
   regression set, the tenant's own intent examples. The candidate is promoted only if it
   does not drop more than `CHATLAKE_NLU_GATE` allows on accuracy, macro F1 or
   out-of-scope recall on either. Every candidate becomes a model version, promoted or
   rejected with its reasons, metrics, confusion summary, lineage and code version;
   promotion sets the Redis key every API process reads per request (no restart).

Model versions are recorded, made live and retired by the model store (nlu/models.py),
the same one `POST /v1/nlu/train` records its versions with.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
import re
import subprocess
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
from redis import Redis

from chatlake.db import owner_connection, tenant_connection
from chatlake.pii import tenant_pseudonym_key
from chatlake.settings import Settings
from chatlake.subject_keys import prune_subject_keys, seal_texts
from lake.readers import tenant_dataset
from lake.schemas import SILVER_CONVERSATION_EVENTS_TABLE, TURNS_TABLE
from lake.writer import open_table, table_uri
from nlu.classifier import OUT_OF_SCOPE, WORD_TOKEN, IntentModel
from nlu.entities import TenantEntity
from nlu.models import IntentModels, publish

TURNS, EVENTS = TURNS_TABLE, SILVER_CONVERSATION_EVENTS_TABLE
HELD_OUT_BUCKETS = 2  # of 10: the share of the training set the gate holds out
Example = tuple[str, str, str]  # (text, intent, language)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def text_digest(tenant_key: bytes, text: str) -> str:
    """A keyed digest of the normalised text: groups equal utterances, reveals nothing."""
    return hmac.new(tenant_key, normalise(text).encode(), hashlib.sha256).hexdigest()


# --- the review queue -------------------------------------------------------------------


def review_candidates(
    lake_root: str, tenant_id: str, since: date, confidence: float
) -> pl.DataFrame:
    """The tenant's utterances since `since` that the model was unsure of, that got a
    fallback reply, or that a handoff followed; one row per utterance with its reasons."""
    dataset = tenant_dataset(lake_root, TURNS, tenant_id)
    if dataset is None:
        return pl.DataFrame()
    columns = ["event_id", "conversation_id", "user_key", "direction", "type", "text",
               "language", "intent", "confidence", "is_fallback", "created_at", "date"]  # fmt: skip
    turns = pl.from_arrow(dataset.to_table(columns=columns))
    assert isinstance(turns, pl.DataFrame)
    turns = turns.filter(pl.col("date") >= since).sort("conversation_id", "created_at")
    if turns.is_empty():
        return pl.DataFrame()
    turns = turns.with_columns(
        next_fallback=pl.col("is_fallback").shift(-1).over("conversation_id").fill_null(False)
        & (pl.col("direction").shift(-1).over("conversation_id") == "out")
    )
    handoffs = _handoffs(lake_root, tenant_id, since)
    utterances = turns.filter(
        (pl.col("direction") == "in") & (pl.col("type") == "text") & pl.col("text").is_not_null()
    )
    if not handoffs.is_empty():  # the last utterance before each handoff
        before = utterances.join(handoffs, on="conversation_id").filter(
            pl.col("created_at") <= pl.col("handoff_at")
        )
        last = before.group_by("conversation_id", "handoff_at").agg(
            pl.col("event_id").sort_by("created_at").last()
        )
        handed = set(last["event_id"].to_list())
    else:
        handed = set()
    unsure = pl.col("intent").is_null() | (pl.col("confidence").fill_null(0.0) < confidence)
    flagged = utterances.with_columns(
        low_confidence=unsure,
        fallback=pl.col("next_fallback"),
        handoff=pl.col("event_id").is_in(list(handed)),
    ).filter(pl.col("low_confidence") | pl.col("fallback") | pl.col("handoff"))
    return flagged.select(
        "event_id", "user_key", "text", "language", "intent", "confidence", "created_at",
        "low_confidence", "fallback", "handoff",
    )  # fmt: skip


def _handoffs(lake_root: str, tenant_id: str, since: date) -> pl.DataFrame:
    dataset = tenant_dataset(lake_root, EVENTS, tenant_id)
    if dataset is None:
        return pl.DataFrame()
    events = pl.from_arrow(dataset.to_table(columns=["conversation_id", "event_type",
                                                     "created_at", "date"]))  # fmt: skip
    assert isinstance(events, pl.DataFrame)
    return events.filter((pl.col("event_type") == "handoff") & (pl.col("date") >= since)).select(
        "conversation_id", handoff_at=pl.col("created_at")
    )


def rank_review_items(
    candidates: pl.DataFrame, tenant_key: bytes, labelled: set[str], limit: int
) -> list[dict[str, Any]]:
    """Group equal utterances, drop those already labelled (by digest), rank by count."""
    if candidates.is_empty():
        return []
    digests = [text_digest(tenant_key, t) for t in candidates["text"].to_list()]
    rows = candidates.with_columns(text_digest=pl.Series(digests)).filter(
        ~pl.col("text_digest").is_in(list(labelled))
    )
    grouped = (
        rows.sort("created_at")
        .group_by("text_digest")
        .agg(
            pl.len().alias("occurrences"),
            pl.col("event_id", "user_key", "text", "language", "intent", "confidence").last(),
            pl.col("created_at").last().alias("last_seen"),
            pl.col("low_confidence").any(),
            pl.col("fallback").any(),
            pl.col("handoff").any(),
        )
        .sort(["occurrences", "last_seen"], descending=True)
        .head(limit)
    )
    items = []
    for row in grouped.iter_rows(named=True):
        reasons = [r for r in ("low_confidence", "fallback", "handoff") if row[r]]
        items.append({**{k: row[k] for k in ("text_digest", "occurrences", "event_id",
                     "user_key", "text", "language", "intent", "confidence", "last_seen")},
                      "reasons": reasons})  # fmt: skip
    return items


def build_review_queue(settings: Settings, redis: Redis, tenant_id: str) -> dict[str, Any]:
    """Rebuild one tenant's review queue in PostgreSQL (one transaction)."""
    tenant_key = tenant_pseudonym_key(settings.secret("pseudonym_key"), tenant_id)
    since = datetime.now(UTC).date() - timedelta(days=settings.nlu_review_days)
    candidates = review_candidates(
        settings.lake_root, tenant_id, since, settings.nlu_review_confidence
    )
    url = app_database_url(settings)
    with tenant_connection(url, tenant_id) as conn:
        labelled = {r["text_digest"] for r in conn.execute("select text_digest from nlu_labels")}
    items = rank_review_items(candidates, tenant_key, labelled, settings.nlu_review_limit)
    sealed = seal_texts(redis, tenant_id, [(i["user_key"], i["text"]) for i in items])
    with tenant_connection(url, tenant_id) as conn:
        conn.execute("delete from nlu_review_items")
        with conn.cursor() as cur:
            cur.executemany(
                """insert into nlu_review_items (tenant_id, event_id, user_key, text_sealed,
                     text_digest, language, intent, confidence, reasons, occurrences, last_seen)
                   values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                [(tenant_id, i["event_id"], i["user_key"], s, i["text_digest"], i["language"],
                  i["intent"], i["confidence"], i["reasons"], i["occurrences"], i["last_seen"])
                 for i, s in zip(items, sealed, strict=True)],
            )  # fmt: skip
    pruned = prune_subject_keys(redis, tenant_id, {i["user_key"] for i in items})
    if pruned:  # their texts left the queue: destroy what could still open old copies
        from chatlake.subject_keys import rewrite_aof

        rewrite_aof(redis)
    return {"utterances": candidates.height, "items": len(items), "keys_destroyed": pruned}


# --- the training set -------------------------------------------------------------------


def app_database_url(settings: Settings) -> str:
    from chatlake.embedded import Services

    return Services(settings).endpoints().app_database_url


def intent_models(settings: Settings) -> IntentModels:
    """The model store, as the app role (row-level security on, as for the API)."""
    return IntentModels(app_database_url(settings), settings.lake_root)


def code_version() -> dict[str, str | None]:
    try:
        package = importlib.metadata.version("chatlake")
    except importlib.metadata.PackageNotFoundError:
        package = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"package": package, "git_commit": commit}


def training_set(
    settings: Settings, tenant_id: str, exclude: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The tenant's intent examples and labelled utterances, with their lineage; `exclude`:
    label event ids left out (an erased subject's, while their erasure runs)."""
    with tenant_connection(app_database_url(settings), tenant_id, snapshot=True) as conn:
        snapshot = conn.execute("select pg_current_snapshot()::text as s").fetchone()
        intents = conn.execute("select name, language, examples from intents").fetchall()
        entities = conn.execute("select name, pattern, lookup from entities").fetchall()
        labels = conn.execute(
            "select event_id, intent, language from nlu_labels order by event_id"
        ).fetchall()
        labels = [row for row in labels if row["event_id"] not in exclude]
        erasures = conn.execute(
            """select request_id from erasure_requests where status = 'completed'
               order by finished_at"""
        ).fetchall()
    examples: list[Example] = [
        (str(text), row["name"], row["language"]) for row in intents for text in row["examples"]
    ]
    table = open_table(table_uri(settings.lake_root, TURNS))
    texts: dict[str, tuple[str, str | None]] = {}
    if labels and table is not None:
        wanted = [row["event_id"] for row in labels]
        dataset = tenant_dataset(settings.lake_root, TURNS, tenant_id)
        assert dataset is not None
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        found = dataset.to_table(
            columns=["event_id", "text", "language"],
            filter=ds.field("event_id").isin(wanted) & pc.is_valid(ds.field("text")),
        )
        for event_id, text, language in zip(
            *(found[c].to_pylist() for c in ("event_id", "text", "language")), strict=True
        ):
            texts[event_id] = (text, language)
    default_language = Counter(lang for _, _, lang in examples).most_common(1)
    fallback_language = default_language[0][0] if default_language else "en"
    labelled: list[Example] = []
    used: list[str] = []
    for row in labels:
        if row["event_id"] in texts:
            text, language = texts[row["event_id"]]
            labelled.append((text, row["intent"], row["language"] or language or fallback_language))
            used.append(row["event_id"])
    everything = examples + labelled
    lineage = {
        "silver_turns_version": table.version() if table is not None else None,
        "postgres_snapshot": snapshot["s"] if snapshot else None,
        "examples": len(examples),
        "labels": len(labelled),
        "labels_without_text": len(labels) - len(labelled),  # erased or expired since
        "label_event_ids": used,
        "erasures_honoured": [row["request_id"] for row in erasures],
        "training_set_sha256": hashlib.sha256(orjson.dumps(sorted(everything))).hexdigest(),
        "code": code_version(),
    }
    return {
        "examples": examples,
        "labelled": labelled,
        "label_texts": {e: texts[e][0] for e in used},
        "entities": [TenantEntity(r["name"], r["pattern"], r["lookup"]) for r in entities],
        "lineage": lineage,
    }


# --- evaluation and the gate ------------------------------------------------------------


def held_out(text: str) -> bool:
    """Whether an example belongs to the held-out split: stable, by a digest of its text."""
    return hashlib.sha256(normalise(text).encode()).digest()[0] % 10 < HELD_OUT_BUCKETS


def evaluate(model: IntentModel | None, items: list[Example]) -> dict[str, Any]:
    """Accuracy, macro F1 and out-of-scope recall of `model` on `items` (an out-of-scope
    item is right when the model rejects it), with the most frequent confusions."""
    if model is None or not items:
        return {"n": len(items), "accuracy": None, "macro_f1": None, "oos_recall": None,
                "confusions": []}  # fmt: skip
    from sklearn.metrics import f1_score

    truth, predicted = [], []
    for text, intent, language in items:
        guess = model.classifier_for(language).predict(text).intent
        truth.append(intent)
        predicted.append(guess.name if guess else OUT_OF_SCOPE)
    oos = [p == OUT_OF_SCOPE for t, p in zip(truth, predicted, strict=True) if t == OUT_OF_SCOPE]
    confusions = Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p)
    right = [t == p for t, p in zip(truth, predicted, strict=True)]
    return {
        "n": len(items),
        "accuracy": round(float(np.mean(right)), 4),
        "macro_f1": round(float(f1_score(truth, predicted, average="macro", zero_division=0)), 4),
        "oos_recall": round(float(np.mean(oos)), 4) if oos else None,
        "confusions": [{"intent": t, "predicted": p, "count": n}
                       for (t, p), n in confusions.most_common(5)],
    }  # fmt: skip


def gate(scores: dict[str, dict[str, dict[str, Any]]], tolerances: dict[str, float]) -> list[str]:
    """The reasons to reject: each metric on each set where the candidate falls more than
    its tolerance below the live model."""
    reasons = []
    for split, pair in scores.items():
        for metric, tolerance in sorted(tolerances.items()):
            candidate, live = pair["candidate"].get(metric), pair["live"].get(metric)
            if candidate is not None and live is not None and candidate < live - tolerance:
                reasons.append(f"{split} {metric} {candidate:.4f} < live {live:.4f} - {tolerance}")
    return reasons


def _train(examples: list[Example], entities: list[TenantEntity]) -> IntentModel | None:
    try:
        return IntentModel.train(examples, entities)
    except ValueError:
        return None  # too few intents or examples without the held-out split


def retrain_tenant(settings: Settings, redis: Redis, tenant_id: str) -> dict[str, Any]:
    """Train, evaluate and gate one tenant's candidate; record it as a model version."""
    data = training_set(settings, tenant_id)
    lineage = data["lineage"]
    everything: list[Example] = data["examples"] + data["labelled"]
    if len({intent for _, intent, _ in everything}) < 2:
        return {"tenant_id": tenant_id, "outcome": "skipped", "reason": "fewer than two intents"}
    models = intent_models(settings)
    live_row = models.live(tenant_id)
    judged = models.judged(tenant_id, lineage["training_set_sha256"])
    if (
        live_row
        and live_row["lineage"].get("training_set_sha256") == lineage["training_set_sha256"]
    ):
        unchanged = f"training set unchanged since version {live_row['version']}"
        return {"tenant_id": tenant_id, "outcome": "skipped", "reason": unchanged}
    if judged:  # a candidate from this very training set was gated already (rejected)
        seen = f"training set already judged as version {judged}"
        return {"tenant_id": tenant_id, "outcome": "skipped", "reason": seen}
    started = time.perf_counter()
    candidate = _train(everything, data["entities"])
    if candidate is None:
        return {
            "tenant_id": tenant_id,
            "outcome": "failed",
            "reason": "the candidate did not train",
        }
    train_seconds = time.perf_counter() - started
    live = models.load(tenant_id, live_row["version"]) if live_row else None
    live_labels = set((live_row or {}).get("lineage", {}).get("label_event_ids", []))
    live_recipe = data["examples"] + [
        (data["label_texts"][e], i, lang)
        for e, (_, i, lang) in zip(lineage["label_event_ids"], data["labelled"], strict=True)
        if e in live_labels
    ]
    test = [x for x in everything if held_out(x[0])]
    scores = {
        "held_out": {
            "candidate": evaluate(_train([x for x in everything if not held_out(x[0])],
                                         data["entities"]), test),
            "live": evaluate(_train([x for x in live_recipe if not held_out(x[0])],
                                    data["entities"]), test) if live else evaluate(None, test),
        },
        "regression": {
            "candidate": evaluate(candidate, data["examples"]),
            "live": evaluate(live, data["examples"]),
        },
    }  # fmt: skip
    reasons = gate(scores, settings.nlu_gate) if live else []
    status = "rejected" if reasons else "promoted"
    metrics = {"train_seconds": round(train_seconds, 3), "examples": lineage["examples"],
               "labels": lineage["labels"], **scores}  # fmt: skip
    decision = {"tolerances": settings.nlu_gate, "passed": not reasons, "reasons": reasons}
    version = _record(settings, redis, tenant_id, candidate, status, metrics, decision, lineage)
    previous = live_row["version"] if live_row else None
    return {"tenant_id": tenant_id, "outcome": status, "model_version": version,
            "reasons": reasons, "previous_version": previous}  # fmt: skip


def _record(
    settings: Settings,
    redis: Redis,
    tenant_id: str,
    model: IntentModel,
    status: str,
    metrics: dict[str, Any],
    decision: dict[str, Any],
    lineage: dict[str, Any],
) -> int:
    """Record a candidate as the retraining job's model version; a promoted one goes live."""
    promoted = status == "promoted"
    version = intent_models(settings).record(
        tenant_id, model, actor="retraining-job", action=f"nlu.{status}", metrics=metrics,
        lineage=lineage, status=status, gate=decision, detail=decision, live=promoted,
    )  # fmt: skip
    if promoted:
        publish(redis, tenant_id, version)
    return version


def tenants_to_retrain(settings: Settings) -> list[str]:
    """Active tenants with a live model or labels (read as the schema owner: a platform
    job). A tenant that never trained a model is left to train its first one itself."""
    from chatlake.embedded import Services

    with owner_connection(Services(settings).endpoints().database_url) as conn:
        rows = conn.execute(
            """select tenant_id::text as t from tenants where status = 'active' and (
                 exists (select 1 from nlu_models m
                         where m.tenant_id = tenants.tenant_id and m.active)
                 or exists (select 1 from nlu_labels l where l.tenant_id = tenants.tenant_id))
               order by created_at"""
        ).fetchall()
    return [row["t"] for row in rows]


def tenants_with_silver(settings: Settings) -> list[str]:
    """Active tenants with silver partitions (not those of tenants no longer known)."""
    from chatlake.embedded import Services

    table = open_table(table_uri(settings.lake_root, TURNS))
    if table is None:
        return []
    in_lake = set(table.get_add_actions(flatten=True)["partition.tenant_id"].to_pylist())
    with owner_connection(Services(settings).endpoints().database_url) as conn:
        rows = conn.execute("select tenant_id::text as t from tenants where status = 'active'")
        active = {row["t"] for row in rows}
    return sorted(in_lake & active)


# --- erasure: model versions trained on a subject's labels ------------------------------


def subject_words(texts: list[str], kept: list[str]) -> set[str]:
    """The words of a subject's labelled texts that no text the tenant keeps has (the
    word featuriser's tokens)."""
    keep = {w for text in kept for w in WORD_TOKEN.findall(text.lower())}
    return {w for text in texts for w in WORD_TOKEN.findall(text.lower())} - keep


def retire_models_trained_on(
    settings: Settings, redis: Redis, tenant_id: str, event_ids: set[str], request_id: str
) -> dict[str, Any]:
    """Erasure: every model version that learnt from one of `event_ids` (a subject's labels)
    is retired, its files deleted; if the live version was one, a new one is trained from
    the training set without those labels and goes live (no gate: the old one may not
    stay), or, if none can be trained, no version is live."""
    models = intent_models(settings)
    doomed = models.trained_on(tenant_id, event_ids)
    result: dict[str, Any] = {"versions_retired": [r["version"] for r in doomed]}
    if not doomed:
        return result
    live_retired = any(r["active"] for r in doomed)
    replacement = None
    if live_retired:
        data = training_set(settings, tenant_id, exclude=frozenset(event_ids))
        model = _train(data["examples"] + data["labelled"], data["entities"])
        if model is not None:
            lineage = {**data["lineage"], "retrained_for_erasure": request_id}
            decision = {"passed": True, "reasons": [], "erasure": request_id}
            replacement = _record(settings, redis, tenant_id, model, "promoted",
                                  {"examples": lineage["examples"], "labels": lineage["labels"]},
                                  decision, lineage)  # fmt: skip
        result["live_retrained_as"] = replacement
    models.retire(tenant_id, result["versions_retired"], "erasure", {"erasure": request_id})
    if live_retired and replacement is None:
        publish(redis, tenant_id, None)  # nothing live: no intent model
    return result


def model_traces(
    settings: Settings, tenant_id: str, event_ids: set[str], words: set[str]
) -> list[str]:
    """Erasure's verification: model versions still trained on the subject's labels, and
    model files whose vocabulary (or any other text) holds one of the subject's words."""
    return intent_models(settings).traces(tenant_id, event_ids, words)
