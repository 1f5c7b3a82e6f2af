"""Subject export (GDPR articles 15 and 20): everything the platform holds about one
tenant's user, from every store, as one zip bundle:

- `subject.json`: who, when, what each store holds (Redis: open conversations with their
  state and recent messages, events not yet in the lake; PostgreSQL: erasure requests
  about the subject (by digest), their utterances in the intent review queue (opened with
  the subject's key) and the labels given to them; the lake: row counts), and the list of
  files;
- `messages.parquet` and `conversation_events.parquet`: every row of the lake's bronze
  tables about the subject (the originals, not the masked silver copies), machine-readable.

The bundle is written incrementally: the lake is scanned in record batches (only the
subject's rows, filtered while scanning) and each batch is appended to the Parquet file
inside the zip as it comes, so neither the tenant's table nor the bundle is ever held in
memory. An export runs as a queued job (chatlake/jobs.py), never in the API process.
"""

from __future__ import annotations

import hashlib
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from redis import Redis

from chatlake.db import owner_connection, tenant_connection
from chatlake.jobs import (
    bundle_path,
    digest,
    finish_job,
    forget_subject_key,
    job_slot,
    record_job,
)
from chatlake.keyspace import TenantKeyspace, redis_sync_client
from chatlake.pii import (
    KEYED_SCHEME,
    LEGACY_SCHEME,
    pseudonymize,
    subject_digest,
    tenant_pseudonym_key,
)
from chatlake.settings import Settings
from chatlake.subject_keys import open_texts
from lake.readers import tenant_dataset
from lake.schemas import CONVERSATION_EVENTS_TABLE, MESSAGES_TABLE, TABLE_SCHEMAS

BATCH_ROWS = 8192  # rows per scanned batch, and per row group of the bundle's Parquet


def _write_lake_rows(
    archive: zipfile.ZipFile, entry: str, lake_root: str, name: str, tenant_id: str,
    user_ids: list[str],
) -> int:  # fmt: skip
    """Stream the subject's rows of one table into `entry`; how many there were."""
    dataset = tenant_dataset(lake_root, name, tenant_id)
    schema = dataset.schema if dataset is not None else TABLE_SCHEMAS[name]
    rows = 0
    with archive.open(entry, "w", force_zip64=True) as handle:
        with pq.ParquetWriter(handle, schema) as writer:
            if dataset is not None:
                wanted = ds.field("user_id").isin(pa.array(user_ids, schema.field("user_id").type))
                for batch in dataset.to_batches(filter=wanted, batch_size=BATCH_ROWS):
                    if batch.num_rows:
                        writer.write_batch(batch)
                        rows += batch.num_rows
    return rows


def _redis_state(redis: Redis, tenant_id: str, user_id: str) -> dict[str, Any]:
    keys = TenantKeyspace(tenant_id)
    conversations = []
    ids: Any = redis.zrange(keys.user_conversations(user_id), 0, -1)
    for raw in ids:
        conversation = raw.decode()
        state: Any = redis.hgetall(keys.conversation(conversation))
        recent: Any = redis.lrange(keys.messages(conversation), 0, -1)
        conversations.append({
            "conversation_id": conversation,
            "state": {k.decode(): v.decode() for k, v in state.items()},
            "recent_messages": [orjson.loads(m) for m in recent],
        })  # fmt: skip
    entries: Any = redis.xrange(keys.events)
    pending = [
        event
        for _, fields in entries
        if fields and (event := orjson.loads(fields[b"event"])).get("user_id") == user_id
    ]
    dead: Any = redis.xrange(keys.channel_dead_letters)
    undelivered = [
        record
        for _, fields in dead
        if fields and (record := orjson.loads(fields[b"event"])).get("user_id") == user_id
    ]
    waiting: Any = redis.xrange(keys.channel_outbox)
    outbox = [
        record
        for _, fields in waiting
        if fields and (record := orjson.loads(fields[b"event"])).get("user_id") == user_id
    ]
    return {
        "conversations": conversations,
        "events_not_yet_in_the_lake": pending,
        "channel_replies_not_delivered": undelivered,
        "channel_replies_being_sent": outbox,
    }


def _postgresql(settings: Settings, redis: Redis, tenant_id: str, user_id: str) -> dict[str, Any]:
    """What PostgreSQL holds about the subject (read as the app role: the tenant's rows)."""
    from chatlake.embedded import Services

    user_key = pseudonymize(user_id, tenant_pseudonym_key(settings.secret("pseudonym_key"),
                                                          tenant_id))  # fmt: skip
    url = Services(settings).endpoints().app_database_url
    with tenant_connection(url, tenant_id) as conn:
        requests = conn.execute(
            """select request_id, status, created_at::text, finished_at::text
                 from erasure_requests
                where (subject_digest_scheme, subject_digest) in ((%s, %s), (%s, %s))""",
            (KEYED_SCHEME, digest(settings, tenant_id, user_id)[0],
             LEGACY_SCHEME, subject_digest(tenant_id, user_id)),
        ).fetchall()  # fmt: skip
        review = conn.execute(
            """select event_id, text_sealed, intent, confidence, reasons, last_seen::text
                 from nlu_review_items where user_key = %s""",
            (user_key,),
        ).fetchall()
        identities = conn.execute(
            """select channel, external_id, created_at::text
                 from channel_identities where user_key = %s order by channel""",
            (user_key,),
        ).fetchall()
        labels = conn.execute(
            """select event_id, intent, language, labelled_by, created_at::text
                 from nlu_labels where user_key = %s""",
            (user_key,),
        ).fetchall()
    texts = open_texts(redis, tenant_id, [(user_key, row["text_sealed"]) for row in review])
    return {
        "erasure_requests": requests,
        "intent_review_queue": [
            {**{k: v for k, v in row.items() if k != "text_sealed"}, "text": text}
            for row, text in zip(review, texts, strict=True)
        ],
        "intent_labels": labels,
        "channel_identities": identities,
    }


def write_export(
    settings: Settings, redis: Redis, tenant_id: str, user_id: str, out: Path
) -> dict[str, Any]:
    """Write the bundle for one subject to `out` (atomically: a finished file or none);
    its size and SHA-256."""
    from pipelines.compliance.erasure import linked_aliases

    lake_root = settings.lake_root
    user_key = pseudonymize(user_id, tenant_pseudonym_key(settings.secret("pseudonym_key"),
                                                          tenant_id))  # fmt: skip
    # what the subject wrote on channels before their identities were linked to them
    aliases = [a for a in linked_aliases(settings, tenant_id, user_key) if a != user_id]
    subjects = [user_id, *aliases]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            messages = _write_lake_rows(archive, "messages.parquet", lake_root, MESSAGES_TABLE,
                                        tenant_id, subjects)  # fmt: skip
            events = _write_lake_rows(archive, "conversation_events.parquet", lake_root,
                                      CONVERSATION_EVENTS_TABLE, tenant_id, subjects)  # fmt: skip
            manifest = {
                "tenant_id": tenant_id,
                "user_id": user_id,
                "subject_digest": digest(settings, tenant_id, user_id)[0],
                "generated_at": datetime.now(UTC).isoformat(),
                "stores": {
                    "redis": _redis_state(redis, tenant_id, user_id),
                    "linked_aliases": {a: _redis_state(redis, tenant_id, a) for a in aliases},
                    "lake": {"messages": messages, "conversation_events": events},
                    "postgresql": _postgresql(settings, redis, tenant_id, user_id),
                },
                "files": {
                    "messages.parquet": "every message in or out of the subject's conversations",
                    "conversation_events.parquet": "conversation starts, handoffs, ratings",
                },
            }
            archive.writestr("subject.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        sha = hashlib.sha256()
        with open(tmp, "rb") as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"bytes": out.stat().st_size, "sha256": sha.hexdigest(),
            "rows": {"messages": messages, "conversation_events": events}}  # fmt: skip


def run_export(
    settings: Settings, tenant_id: str, user_id: str, actor: str,
    request_id: str | None = None, out: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Record (or resume) an export request, wait for the tenant's turn, write the bundle
    (to `out`, or to the request's place the API serves it from), audit it."""
    from psycopg.types.json import Jsonb

    from chatlake.embedded import Services

    endpoints = Services(settings).endpoints()
    request_id = request_id or uuid.uuid4().hex
    subject = digest(settings, tenant_id, user_id)
    with owner_connection(endpoints.database_url) as conn:
        record_job(conn, request_id, tenant_id, "export", subject, actor, "cli")
    target = out or bundle_path(settings, tenant_id, request_id)
    with job_slot(endpoints.database_url, tenant_id, request_id, settings.compliance_max_running):
        redis = redis_sync_client(endpoints.redis_url)
        try:
            try:
                result = write_export(settings, redis, tenant_id, user_id, target)
            except Exception as exc:
                with owner_connection(endpoints.database_url) as conn:
                    finish_job(conn, request_id, "failed", None, f"{type(exc).__name__}: {exc}")
                raise
            with owner_connection(endpoints.database_url) as conn:
                finish_job(conn, request_id, "completed", result)
                conn.execute(
                    """insert into audit_log (tenant_id, actor, action, target, detail)
                       values (%s, %s, 'compliance.export', %s, %s)""",
                    (tenant_id, actor, request_id,
                     Jsonb({"subject_digest": subject[0], "subject_digest_scheme": subject[1],
                            "sha256": result["sha256"]})),
                )  # fmt: skip
            forget_subject_key(redis, tenant_id, request_id)  # the sealed id opens no more
        finally:
            redis.close()
    return {"request_id": request_id, "out": str(target.resolve()), **result}
