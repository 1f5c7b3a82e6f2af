"""Erasure of one data subject (a tenant's `user_id`) from every store, with proof.

Steps, each idempotent so that an interrupted erasure resumes to the same end:
1. Redis: the subject's conversations (state and recent messages), their index, the
   entries of the tenant's event stream that are about them and not yet in the lake, and
   the tenant's LLM response cache (prompts are keyed by hash, so the subject's cannot be
   told apart); then the append-only file is rewritten from memory, so the AOF on disk no
   longer holds them (snapshots are off in the embedded Redis).
2. The lake: bronze by `user_id` and silver by `user_key` (lake/erasure.py: DELETE, the
   tenant-scoped vacuum, log clean-up).
3. The warehouse: the days that held the subject are rebuilt from the erased silver (the
   marts' incremental models replace exactly those days), then the DuckDB file is
   rewritten into a fresh file, so no freed block keeps an old row.
4. Verification: every store is searched again for the subject's identifiers (user id,
   pseudonym, conversation ids): Redis keys, stream and AOF; every live data file of the
   tenant's partitions and every log file of every lake table; readable table versions;
   the warehouse's marts; and every other file under `$CHATLAKE_HOME` (logs, run data),
   PostgreSQL's own directory excepted (see the certificate's note).
5. The certificate (JSON) is stored with the request and recorded in the audit log.

PostgreSQL holds the subject's review-queue items and labels (keyed by the pseudonym),
deleted after the warehouse step; their texts are sealed under the subject's key
(chatlake/subject_keys.py), destroyed in step 1, which is what makes PostgreSQL's dead
tuples and WAL safe. The erasure request keeps only a digest of the subject, never the id.

A message that arrives for the subject while the erasure runs is refused with 409
`erasure_in_progress` (see realtime/messages.py); other users are not affected.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from redis import Redis

from chatlake.db import owner_connection
from chatlake.embedded import Services
from chatlake.jobs import bundle_path, digest
from chatlake.keyspace import TenantKeyspace
from chatlake.pii import pseudonymize, subject_digest, tenant_pseudonym_key
from chatlake.runlock import pipeline_lock
from chatlake.settings import Settings
from chatlake.subject_keys import destroy_subject_key, rewrite_aof, subject_key_exists
from chatlake.warehouse import read_warehouse, rewrite_warehouse, write_warehouse
from lake.erasure import (
    SUBJECT_COLUMNS,
    erase_from_table,
    failpoint,
    log_mentions,
    versions_holding,
)
from lake.readers import tenant_dataset
from lake.schemas import MESSAGES_TABLE

ERASING_SECONDS = 3600  # the in-progress mark outlives a crashed erasure by at most this


def erasing_key(tenant_id: str, user_id: str) -> str:
    """Set while the subject's erasure runs: the API refuses their messages meanwhile."""
    return TenantKeyspace(tenant_id).erasing(subject_digest(tenant_id, user_id))


def _subject_in_lake(lake_root: str, tenant_id: str, user_id: str) -> tuple[set[str], set[str]]:
    """The subject's conversation ids and days in bronze (the tenant's partitions only)."""
    dataset = tenant_dataset(lake_root, MESSAGES_TABLE, tenant_id)
    if dataset is None:
        return set(), set()
    rows = dataset.to_table(columns=["user_id", "conversation_id", "date"])
    mine = rows.filter(pc.equal(rows["user_id"].cast(pa.string()), user_id))
    conversations = set(mine["conversation_id"].cast(pa.string()).to_pylist())
    return conversations, {str(day) for day in mine["date"].to_pylist()}


def _strings(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _subject_entries(redis: Redis, stream: str, user_id: str) -> list[Any]:
    """The ids of the stream's entries about the subject (not yet trimmed by ingest)."""
    entries: Any = redis.xrange(stream)
    return [
        entry_id
        for entry_id, fields in entries
        if fields and orjson.loads(fields[b"event"]).get("user_id") == user_id
    ]


def _kafka_note(settings: Settings) -> dict[str, Any]:
    """On the Kafka bus, what the topic keeps of the subject and why it is unreadable."""
    if settings.event_bus != "kafka":
        return {}
    return {
        "kafka": f"The topic {settings.kafka_topic} keeps the subject's events until its "
        "retention deletes them; each was sealed by the relay under the subject's bus key, "
        "destroyed in this step (with the append-only file rewritten), so no copy can be "
        "opened, and the ingest drops any it had not yet read."
    }


def erase_redis(redis: Redis, tenant_id: str, user_id: str, pseudonym: str) -> dict[str, Any]:
    keys = TenantKeyspace(tenant_id)
    index = keys.user_conversations(user_id)
    conversations = _strings(redis.zrange(index, 0, -1))
    doomed = [index]
    for conversation in conversations:
        doomed += [keys.conversation(conversation), keys.messages(conversation)]
    deleted_keys = int(redis.delete(*doomed))
    # the subject's entries of every stream: their events not yet in the lake, replies a
    # channel would not take (dead letters), replies still waiting in the outbox (the sender
    # skips an entry that is gone), messages kept over a channel's budget, not answered yet
    streams = {
        "stream_entries_deleted": keys.events,
        "channel_dead_letters_deleted": keys.channel_dead_letters,
        "channel_outbox_entries_deleted": keys.channel_outbox,
        "channel_inbox_entries_deleted": keys.channel_inbox,
    }
    entries_deleted: dict[str, int] = {}
    for field, stream in streams.items():
        entries = _subject_entries(redis, stream, user_id)
        if entries:
            redis.xdel(stream, *entries)
        entries_deleted[field] = len(entries)
    cache = list(redis.scan_iter(match=f"{keys.prefix}:llmcache:*", count=1000))
    if cache:
        redis.delete(*cache)
    key_destroyed = destroy_subject_key(redis, tenant_id, pseudonym)
    rewrite_aof(redis)
    return {
        "conversations": len(conversations),
        "keys_deleted": deleted_keys,
        **entries_deleted,
        "cache_entries_deleted": len(cache),
        "subject_key_destroyed": key_destroyed,
        "append_only_file": "rewritten",
    }


def erase_lake(
    lake_root: str, tenant_id: str, user_id: str, pseudonym: str, request_id: str
) -> list[dict[str, Any]]:
    """Every lake table that holds the subject; per table what was removed."""
    subjects = {name: user_id if col == "user_id" else pseudonym
                for name, col in SUBJECT_COLUMNS.items()}  # fmt: skip
    return [
        erase_from_table(lake_root, name, tenant_id, subjects[name], request_id)
        for name in SUBJECT_COLUMNS
    ]


# rows keyed by the subject's user_key: review-queue items, labels, and the links of the
# subject's identities on the channels (phone numbers, Slack ids, ...)
PG_SUBJECT_TABLES = ("nlu_review_items", "nlu_labels", "channel_identities")


def erase_postgresql(database_url: str, tenant_id: str, pseudonym: str) -> dict[str, Any]:
    """The subject's review-queue items and labels (their utterances' texts are sealed
    under the subject's key, destroyed in the Redis step)."""
    deleted = {}
    with owner_connection(database_url) as conn:
        for table in PG_SUBJECT_TABLES:
            cur = conn.execute(
                f"delete from {table} where tenant_id = %s and user_key = %s",
                (tenant_id, pseudonym),
            )
            deleted[table] = cur.rowcount
    # The links hold channel ids in the clear: their dead tuples go now, not at autovacuum.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("vacuum channel_identities")
    return {
        "rows_deleted": deleted,
        "note": "End-user text in PostgreSQL (review-queue utterances) is stored sealed under "
        "a key of the subject's own, kept in Redis; that key was destroyed and Redis's "
        "append-only file rewritten, so the dead tuples and WAL records PostgreSQL keeps "
        "until vacuum and checkpoints recycle them hold only ciphertext no key opens. "
        "Labels keep no text. The subject's channel identity links are deleted and the "
        "table vacuumed at once; WAL records of them are recycled by the next checkpoints. "
        "Erasure requests keep a digest of the subject, never the id.",
    }


def _postgresql_rows(database_url: str, tenant_id: str, pseudonym: str) -> dict[str, int]:
    counts = {}
    with owner_connection(database_url) as conn:
        for table in PG_SUBJECT_TABLES:
            row = conn.execute(
                f"select count(*) as n from {table} where tenant_id = %s and user_key = %s",
                (tenant_id, pseudonym),
            ).fetchone()
            if row and row["n"]:
                counts[table] = int(row["n"])
    return counts


def rebuild_warehouse(settings: Settings, days: list[str], pseudonym: str) -> dict[str, Any]:
    """The subject's rows out of the per-row marts, the aggregates of the days that held
    them rebuilt, then a fresh copy of the DuckDB file."""
    # The marts' single DuckDB writer: queue behind (or inside) any pipeline run.
    what = f"erasure (pid {os.getpid()})"
    with pipeline_lock(settings.home, what):
        return _rebuild_warehouse(settings, days, pseudonym, what)


def _rebuild_warehouse(
    settings: Settings, days: list[str], pseudonym: str, what: str
) -> dict[str, Any]:
    from pipelines.run import run_pipeline

    result: dict[str, Any] = {"days": days, "rows_deleted": {}}
    with write_warehouse(settings, what) as connection:
        if connection is not None:
            tables = {r[0] for r in connection.execute("show tables").fetchall()}
            for table in ("fct_messages", "fct_conversations"):
                if table in tables:
                    deleted = connection.execute(
                        f"delete from {table} where user_key = ?", [pseudonym]
                    ).fetchall()
                    result["rows_deleted"][table] = int(deleted[0][0]) if deleted else 0
    if days:
        from datetime import date

        run = run_pipeline(settings, date.fromisoformat(days[0]), date.fromisoformat(days[-1]))
        result["pipeline_run"] = {"run_id": run["run_id"], "success": run["success"],
                                  "checks_failed": run["checks_failed"]}  # fmt: skip
        if not run["success"]:
            raise RuntimeError(f"rebuilding the marts failed: {run['checks_failed']}")
    if rewrite_warehouse(settings, what):
        result["file"] = "rewritten"
    return result


def scrub_files(
    settings: Settings, tenant_id: str, user_id: str, markers: list[str], request_id: str
) -> dict[str, Any]:
    """The subject's export bundles deleted, and every line of the run directory's logs
    that names the subject (written before the access log kept route templates only, or by
    anything else) replaced by a note, so that the files verification searches can pass.

    A log is rewritten in place, not replaced, because its writer (the API, the ingest
    worker, ...) keeps it open in append mode: it goes on appending to the same file."""
    subject_digest_value, _ = digest(settings, tenant_id, user_id)
    bundles = []
    with owner_connection(Services(settings).endpoints().database_url) as conn:
        rows = conn.execute(
            """select job_id from compliance_jobs
               where tenant_id = %s and kind = 'export' and subject_digest = %s""",
            (tenant_id, subject_digest_value),
        ).fetchall()
    for row in rows:
        path = bundle_path(settings, tenant_id, row["job_id"])
        if path.exists():
            path.unlink()
            bundles.append(row["job_id"])
    needles = [m.encode() for m in markers if m]
    note = orjson.dumps({"event": "line removed by erasure", "request_id": request_id}) + b"\n"
    scrubbed: dict[str, int] = {}
    for path in sorted(settings.run_dir.rglob("*")) if settings.run_dir.exists() else []:
        if path.is_file() and _file_mentions(path, needles):
            count = _scrub_lines(path, needles, note)
            if count:
                scrubbed[str(path.relative_to(settings.home))] = count
    return {"export_bundles_deleted": len(bundles), "log_lines_removed": scrubbed}


def _scrub_lines(path: Path, needles: list[bytes], note: bytes) -> int:
    with open(path, "r+b") as handle:
        lines = handle.read().splitlines(keepends=True)
        kept = [note if any(n in line for n in needles) else line for line in lines]
        removed = sum(1 for a, b in zip(lines, kept, strict=True) if a is not b)
        if removed:
            tail = handle.read()  # appended since it was read: kept after the rewrite
            handle.seek(0)
            handle.write(b"".join(kept) + tail)
            handle.truncate()
    return removed


def _file_mentions(path: Path, needles: list[bytes]) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(needle in data for needle in needles)


def verify(
    settings: Settings,
    redis: Redis,
    tenant_id: str,
    user_id: str,
    pseudonym: str,
    conversations: set[str],
) -> dict[str, Any]:
    """Search every store for the subject again; `passed` only if nothing is found."""
    keys = TenantKeyspace(tenant_id)
    # What identifies this subject in this tenant only (the same user id may belong to
    # someone else in another tenant): the pseudonym, the conversation ids, the index key.
    markers = [pseudonym, *conversations, keys.user_conversations(user_id)]
    needles = [m.encode() for m in markers]
    found: list[str] = []
    for key in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
        name = key.decode()
        if any(marker in name for marker in markers):
            found.append(f"redis key {name}")
    if _subject_entries(redis, keys.events, user_id):
        found.append("redis stream entries")
    if _subject_entries(redis, keys.channel_dead_letters, user_id):
        found.append("redis channel dead letters")
    if _subject_entries(redis, keys.channel_outbox, user_id):
        found.append("redis channel outbox entries")
    if _subject_entries(redis, keys.channel_inbox, user_id):
        found.append("redis channel inbox entries")
    redis_dir = Path(str(redis.config_get("dir")["dir"]))
    for path in redis_dir.iterdir():
        if path.suffix in (".aof", ".rdb") and _file_mentions(path, needles):
            found.append(f"redis file {path.name}")
    lake = Path(settings.lake_root)
    for name, column in SUBJECT_COLUMNS.items():
        subject = user_id if column == "user_id" else pseudonym
        for version in versions_holding(settings.lake_root, name, tenant_id, subject):
            found.append(f"lake {name} version {version}")
        partition = lake / name / f"tenant_id={tenant_id}"
        for path in partition.rglob("*.parquet") if partition.exists() else []:
            values = pq.read_table(path, columns=[column])[column].to_pylist()
            if subject in values:
                found.append(f"lake file {path.relative_to(lake)}")
        for log in log_mentions(settings.lake_root, name, tenant_id, [subject, *markers]):
            found.append(f"lake log {name}/_delta_log/{log}")
    database_url = Services(settings).endpoints().database_url
    postgresql_rows = _postgresql_rows(database_url, tenant_id, pseudonym)
    if postgresql_rows:
        found.append(f"postgresql rows: {postgresql_rows}")
    if subject_key_exists(redis, tenant_id, pseudonym):
        found.append("redis subject key")
    warehouse_rows = _warehouse_rows(settings, pseudonym)
    if warehouse_rows:
        found.append(f"warehouse rows: {warehouse_rows}")
    skip = {settings.home / "postgres", settings.home / "redis", lake, settings.warehouse}
    for path in settings.home.rglob("*"):
        if path.is_file() and not any(p == path or p in path.parents for p in skip):
            if _file_mentions(path, needles):
                found.append(f"file {path.relative_to(settings.home)}")
    return {"passed": not found, "found": found, "searched_for": len(markers) + 1}


def _warehouse_rows(settings: Settings, pseudonym: str) -> dict[str, int]:
    connection = read_warehouse(settings)
    if connection is None:
        return {}
    counts = {}
    with connection:
        tables = {r[0] for r in connection.execute("show tables").fetchall()}
        for table in ("fct_messages", "fct_conversations"):
            if table in tables:
                query = f"select count(*) from {table} where user_key = ?"
                count = connection.execute(query, [pseudonym]).fetchall()[0][0]
                if count:
                    counts[table] = int(count)
    return counts


def linked_aliases(settings: Settings, tenant_id: str, pseudonym: str) -> list[str]:
    """The ids the subject wrote under on channels before their identities were linked
    to them (`<channel>:<id there>`, realtime/channels/identities.py)."""
    from chatlake.events import default_user_id

    with owner_connection(Services(settings).endpoints().database_url) as conn:
        rows = conn.execute(
            """select channel, external_id from channel_identities
               where tenant_id = %s and user_key = %s order by channel, external_id""",
            (tenant_id, pseudonym),
        ).fetchall()
    return [default_user_id(row["channel"], row["external_id"]) for row in rows]


def subject_models(settings: Settings, tenant_id: str, pseudonym: str) -> tuple[set[str], set[str]]:
    """The event ids of the subject's labels, and the words of those labelled texts that
    nothing else the tenant trains on has (what a model trained on them would hold)."""
    with owner_connection(Services(settings).endpoints().database_url) as conn:
        rows = conn.execute(
            "select event_id from nlu_labels where tenant_id = %s and user_key = %s",
            (tenant_id, pseudonym),
        ).fetchall()
    event_ids = {row["event_id"] for row in rows}
    if not event_ids:
        return event_ids, set()
    from pipelines.nlu import subject_words, training_set

    everything = training_set(settings, tenant_id)
    labelled = everything["label_texts"]
    kept = [text for text, _, _ in everything["examples"]]
    kept += [text for event, text in labelled.items() if event not in event_ids]
    return event_ids, subject_words([labelled[e] for e in event_ids if e in labelled], kept)


def erase_models(
    settings: Settings, redis: Redis, tenant_id: str, event_ids: set[str], request_id: str
) -> dict[str, Any]:
    from pipelines.nlu import retire_models_trained_on

    return retire_models_trained_on(settings, redis, tenant_id, event_ids, request_id)


def erase(
    settings: Settings,
    redis: Redis,
    tenant_id: str,
    user_id: str,
    request_id: str | None = None,
    follow_links: bool = True,
) -> dict[str, Any]:
    """Run every step and return the certificate (the caller stores and audits it).

    The subject's linked channel identities are followed: what was written under each
    one's own id before the link (`whatsapp:<number>`, ...) is erased first, each with a
    certificate of its own inside this one (`aliases`); the links go with the subject's
    PostgreSQL rows."""
    request_id = request_id or uuid.uuid4().hex
    started = datetime.now(UTC)
    mark = erasing_key(tenant_id, user_id)
    pseudonym = pseudonymize(
        user_id, tenant_pseudonym_key(settings.secret("pseudonym_key"), tenant_id)
    )
    aliases = []
    if follow_links:
        for i, alias in enumerate(linked_aliases(settings, tenant_id, pseudonym)):
            if alias == user_id:
                continue
            aliases.append(
                erase(settings, redis, tenant_id, alias, f"{request_id}.{i}", follow_links=False)
            )
            redis.delete(erasing_key(tenant_id, alias))  # its part is done and verified
    # The days to rebuild must survive a crash after the lake no longer shows them: they
    # ride on the in-progress mark (days only: no identifier may sit in Redis's files).
    conversations, lake_days = _subject_in_lake(settings.lake_root, tenant_id, user_id)
    # What an interrupted run of this request did rides on the mark too (counts and file
    # names only): a rerun skips the steps it finished, and the certificate of the run
    # that finishes covers every run.
    previous: Any = redis.get(mark)
    try:
        remembered = orjson.loads(previous) if previous else {}
    except orjson.JSONDecodeError:
        remembered = {}
    if remembered.get("request_id") != request_id:
        remembered = {"days": remembered.get("days", [])}  # another request's: days only
    days = sorted(set(remembered.get("days", [])) | lake_days
                  | set(_warehouse_days(settings, pseudonym)))  # fmt: skip
    earlier: dict[str, Any] = remembered.get("stores", {})
    counted = max(len(conversations), int(remembered.get("conversations", 0)))
    stores: dict[str, Any] = {}

    def remember() -> None:
        state = {"request_id": request_id, "days": days, "conversations": counted,
                 "stores": stores}  # fmt: skip
        redis.set(mark, orjson.dumps(state), ex=ERASING_SECONDS)

    remember()
    failpoint("marked")
    index = TenantKeyspace(tenant_id).user_conversations(user_id)
    conversations.update(_strings(redis.zrange(index, 0, -1)))
    counted = max(counted, len(conversations))
    # before the lake step: the labelled texts are read from silver
    label_events, label_words = subject_models(settings, tenant_id, pseudonym)
    steps = (
        ("redis", lambda: {**erase_redis(redis, tenant_id, user_id, pseudonym),
                           **_kafka_note(settings)}, "redis_erased"),
        ("models", lambda: erase_models(settings, redis, tenant_id, label_events, request_id),
         None),
        ("lake", lambda: erase_lake(settings.lake_root, tenant_id, user_id, pseudonym,
                                    request_id), "lake_erased"),
        ("warehouse", lambda: rebuild_warehouse(settings, days, pseudonym), "warehouse_rebuilt"),
        ("postgresql", lambda: erase_postgresql(
            Services(settings).endpoints().database_url, tenant_id, pseudonym), None),
    )  # fmt: skip
    for name, step, crash_point in steps:
        if name in earlier:  # done by an interrupted run: the mark refuses the subject's
            stores[name] = earlier[name]  # messages since, so nothing new reached it
            continue
        stores[name] = step()
        remember()
        if crash_point:
            failpoint(crash_point)
    markers = [pseudonym, *conversations, TenantKeyspace(tenant_id).user_conversations(user_id)]
    if len(user_id) >= 6:  # shorter ids would match unrelated lines
        markers.append(user_id)
    stores["files"] = scrub_files(settings, tenant_id, user_id, markers, request_id)
    verification = verify(settings, redis, tenant_id, user_id, pseudonym, conversations)
    from pipelines.nlu import model_traces

    traces = model_traces(settings, tenant_id, label_events, label_words)
    if traces:
        verification = {**verification, "passed": False,
                        "found": [*verification["found"], *traces]}  # fmt: skip
    # The mark stays until the caller has stored the certificate (pipelines/compliance/requests.py):
    # after a crash or a failure the subject's messages stay refused and a rerun of the
    # request resumes with what is remembered (or the mark expires).
    if aliases:
        failed = [a["subject_digest"] for a in aliases if not a["verification"]["passed"]]
        verification = {**verification, "passed": verification["passed"] and not failed,
                        "aliases_failed": failed}  # fmt: skip
    return {
        "request_id": request_id,
        "tenant_id": tenant_id,
        "subject_digest": digest(settings, tenant_id, user_id)[0],
        "subject_digest_scheme": digest(settings, tenant_id, user_id)[1],
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "conversations": counted,
        "stores": stores,
        "verification": verification,
        "aliases": aliases,
    }


def _warehouse_days(settings: Settings, pseudonym: str) -> list[str]:
    connection = read_warehouse(settings)
    if connection is None:
        return []
    with connection:
        tables = {r[0] for r in connection.execute("show tables").fetchall()}
        if "fct_messages" not in tables:
            return []
        rows = connection.execute(
            "select distinct day::text from fct_messages where user_key = ?", [pseudonym]
        ).fetchall()
    return [r[0] for r in rows]
