"""Subject export (GDPR articles 15 and 20): everything the platform holds about one
tenant's user, from every store, as one zip bundle:

- `subject.json`: who, when, what each store holds (Redis: open conversations with their
  state and recent messages, events not yet in the lake; PostgreSQL: erasure requests
  about the subject (by digest), their utterances in the intent review queue (opened with
  the subject's key) and the labels given to them; the lake: row counts), and the list of
  files;
- `messages.parquet` and `conversation_events.parquet`: every row of the lake's bronze
  tables about the subject (the originals, not the masked silver copies), machine-readable.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from redis import Redis

from chatlake.db import tenant_connection
from chatlake.keyspace import TenantKeyspace
from chatlake.settings import Settings
from compliance.pii import pseudonymize, subject_digest, tenant_pseudonym_key
from compliance.subject_keys import open_texts
from lake.readers import tenant_dataset
from lake.schemas import CONVERSATION_EVENTS_TABLE, MESSAGES_TABLE, TABLES


def _lake_rows(lake_root: str, name: str, tenant_id: str, user_ids: list[str]) -> pa.Table:
    dataset = tenant_dataset(lake_root, name, tenant_id)
    if dataset is None:
        return TABLES[name][1].empty_table()
    rows = dataset.to_table()
    return rows.filter(pc.is_in(rows["user_id"].cast(pa.string()), pa.array(user_ids)))


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


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _postgresql(settings: Settings, redis: Redis, tenant_id: str, user_id: str) -> dict[str, Any]:
    """What PostgreSQL holds about the subject (read as the app role: the tenant's rows)."""
    from chatlake.embedded import Services

    user_key = pseudonymize(user_id, tenant_pseudonym_key(settings.secret("pseudonym_key"),
                                                          tenant_id))  # fmt: skip
    url = Services(settings).endpoints().app_database_url
    with tenant_connection(url, tenant_id) as conn:
        requests = conn.execute(
            """select request_id, status, created_at::text, finished_at::text
                 from erasure_requests where subject_digest = %s""",
            (subject_digest(tenant_id, user_id),),
        ).fetchall()
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


def export_subject(settings: Settings, redis: Redis, tenant_id: str, user_id: str) -> bytes:
    """The bundle (zip bytes) for one subject."""
    from compliance.erasure import linked_aliases

    lake_root = settings.lake_root
    user_key = pseudonymize(user_id, tenant_pseudonym_key(settings.secret("pseudonym_key"),
                                                          tenant_id))  # fmt: skip
    # what the subject wrote on channels before their identities were linked to them
    aliases = [a for a in linked_aliases(settings, tenant_id, user_key) if a != user_id]
    subjects = [user_id, *aliases]
    messages = _lake_rows(lake_root, MESSAGES_TABLE, tenant_id, subjects)
    events = _lake_rows(lake_root, CONVERSATION_EVENTS_TABLE, tenant_id, subjects)
    manifest = {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "subject_digest": subject_digest(tenant_id, user_id),
        "generated_at": datetime.now(UTC).isoformat(),
        "stores": {
            "redis": _redis_state(redis, tenant_id, user_id),
            "linked_aliases": {alias: _redis_state(redis, tenant_id, alias) for alias in aliases},
            "lake": {"messages": messages.num_rows, "conversation_events": events.num_rows},
            "postgresql": _postgresql(settings, redis, tenant_id, user_id),
        },
        "files": {
            "messages.parquet": "every message in or out of the subject's conversations",
            "conversation_events.parquet": "conversation starts, handoffs, ratings",
        },
    }
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("subject.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        archive.writestr("messages.parquet", _parquet(messages))
        archive.writestr("conversation_events.parquet", _parquet(events))
    return bundle.getvalue()


def write_bundle(data: bytes, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
