"""Silver: bronze rows cleaned, PII-masked and pseudonymized, a range of days at a time.

`silver/turns` has one row per message (in or out) with the text normalised (Unicode NFKC,
whitespace collapsed, empty as null) and masked (chatlake/pii.py), `user_id` replaced by
`user_key` (a per-tenant keyed hash), `payload` dropped (free-form, may hold anything), and
`is_fallback` set on replies that only the rules tier could give, and `is_first_reply` on
one reply per turn (the one that carries the turn's latency in percentiles).
`silver/conversation_events` is bronze's conversation events with the same pseudonym.
Both are partitioned by tenant and date (their names and schemas: lake/schemas.py), and a
rebuild of a range of days replaces exactly those days (Delta `replaceWhere`), so re-running
a day is idempotent and a new day does not touch history.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from chatlake.pii import mask_pii, pseudonymize, tenant_pseudonym_key
from lake import locks
from lake.datasets import arrow_dataset
from lake.schemas import (
    CONVERSATION_EVENTS_TABLE,
    MESSAGES_TABLE,
    PARTITION_BY,
    SILVER_CONVERSATION_EVENTS,
    SILVER_CONVERSATION_EVENTS_TABLE,
    SILVER_TURNS,
    TURNS_TABLE,
)
from lake.writer import open_table, table_uri


def clean_texts(texts: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.Array]:
    """Normalised (NFKC, whitespace collapsed, empty as null) and PII-masked texts, and how
    many PII spans each had. Vectorized; only texts with a digit or an @ reach the masker."""
    normalised = pc.utf8_trim_whitespace(
        pc.replace_substring_regex(pc.utf8_normalize(texts, "NFKC"), r"\s+", " ")
    )
    normalised = pc.if_else(pc.equal(normalised, ""), pa.scalar(None, pa.string()), normalised)
    values = normalised.to_pylist()
    found = np.zeros(len(values), dtype=np.int32)
    candidates = pc.fill_null(pc.match_substring_regex(normalised, r"[0-9@]"), False)
    for i in np.flatnonzero(candidates.to_numpy(zero_copy_only=False)):
        values[i], found[i] = mask_pii(values[i])
    return pa.array(values, pa.string()), pa.array(found, pa.int32())


def _read_days(lake_root: str, name: str, first: date, last: date) -> pa.Table | None:
    table = open_table(table_uri(lake_root, name))
    if table is None:
        return None
    dataset = arrow_dataset(table)
    day = pc.field("date")
    return dataset.to_table(filter=(day >= pa.scalar(first)) & (day <= pa.scalar(last)))


def _user_keys(rows: pa.Table, pseudonym_key: str) -> list[str]:
    """Each row's pseudonym, computed once per distinct (tenant, user)."""
    tenant_keys: dict[str, bytes] = {}
    pseudonyms: dict[tuple[str, str], str] = {}
    out = []
    for pair in zip(
        rows.column("tenant_id").to_pylist(), rows.column("user_id").to_pylist(), strict=True
    ):
        pseudonym = pseudonyms.get(pair)
        if pseudonym is None:
            tenant_id, user_id = pair
            key = tenant_keys.get(tenant_id)
            if key is None:
                key = tenant_keys[tenant_id] = tenant_pseudonym_key(pseudonym_key, tenant_id)
            pseudonym = pseudonyms[pair] = pseudonymize(user_id, key)
        out.append(pseudonym)
    return out


def _first_replies(bronze: pa.Table) -> pa.Array:
    """True on one reply per turn: a turn's replies share its timestamp (and its latency),
    so the first of them by event id stands for the turn in latency percentiles."""
    frame = pl.from_arrow(bronze.select(["event_id", "conversation_id", "created_at", "direction"]))
    assert isinstance(frame, pl.DataFrame)
    first = (pl.col("direction") == "out") & (
        pl.col("event_id")
        == pl.col("event_id").min().over("conversation_id", "created_at", "direction")
    )
    return frame.select(first.alias("first"))["first"].to_arrow()


def turns_from_bronze(bronze: pa.Table, pseudonym_key: str) -> pa.Table:
    """Bronze message rows -> silver turns (deduplicated by event_id)."""
    if bronze.num_rows:
        first = pc.equal(pc.fill_null(pc.index_in(bronze["event_id"], bronze["event_id"]), -1),
                         pa.array(range(bronze.num_rows)))  # fmt: skip
        bronze = bronze.filter(first)
    columns: dict[str, Any] = {
        name: bronze[name]
        for name in SILVER_TURNS.names
        if name in bronze.column_names and name != "text"
    }
    columns["text"], columns["pii_found"] = clean_texts(bronze["text"])
    columns["user_key"] = pa.array(_user_keys(bronze, pseudonym_key), pa.string())
    is_out = pc.equal(bronze["direction"], "out")
    columns["is_fallback"] = pc.fill_null(pc.and_(is_out, pc.equal(bronze["tier"], "rules")), False)
    columns["is_first_reply"] = _first_replies(bronze)
    return pa.table({name: columns[name] for name in SILVER_TURNS.names}, schema=SILVER_TURNS)


def events_from_bronze(bronze: pa.Table, pseudonym_key: str) -> pa.Table:
    schema = SILVER_CONVERSATION_EVENTS
    columns: dict[str, Any] = {n: bronze[n] for n in schema.names if n in bronze.column_names}
    columns["user_key"] = pa.array(_user_keys(bronze, pseudonym_key), pa.string())
    return pa.table({name: columns[name] for name in schema.names}, schema=schema)


def _replace_days(lake_root: str, name: str, rows: pa.Table, first: date, last: date) -> None:
    uri = table_uri(lake_root, name)
    predicate = f"date >= '{first.isoformat()}' AND date <= '{last.isoformat()}'"
    with locks.writing(uri):  # erasure and retention never take its files for orphans
        if open_table(uri) is None:
            write_deltalake(uri, rows, mode="overwrite", partition_by=PARTITION_BY)
        else:
            write_deltalake(
                uri, rows, mode="overwrite", predicate=predicate, partition_by=PARTITION_BY,
                schema_mode="merge",  # a column added to silver lands without a rebuild
            )  # fmt: skip


def build_silver(lake_root: str, first: date, last: date, pseudonym_key: str) -> dict[str, int]:
    """Rebuild silver for the days `first`..`last` from bronze; rows written per table."""
    written = {}
    for source, target, transform, schema in (
        (MESSAGES_TABLE, TURNS_TABLE, turns_from_bronze, SILVER_TURNS),
        (
            CONVERSATION_EVENTS_TABLE,
            SILVER_CONVERSATION_EVENTS_TABLE,
            events_from_bronze,
            SILVER_CONVERSATION_EVENTS,
        ),
    ):
        bronze = _read_days(lake_root, source, first, last)
        rows = transform(bronze, pseudonym_key) if bronze is not None else schema.empty_table()
        _replace_days(lake_root, target, rows, first, last)
        written[target] = rows.num_rows
    return written


def bronze_days(lake_root: str) -> list[date]:
    """The days that have bronze messages (from the Delta log's partition values)."""
    days: set[date] = set()
    for name in (MESSAGES_TABLE, CONVERSATION_EVENTS_TABLE):
        table = open_table(table_uri(lake_root, name))
        if table is None:
            continue
        actions = pa.table(table.get_add_actions(flatten=True))
        days.update(date.fromisoformat(str(d)) for d in actions["partition.date"].to_pylist())
    return sorted(days)


def days_added_since(lake_root: str, since_ms: int) -> tuple[list[date], int]:
    """Days of bronze files added after `since_ms` (epoch ms), and the newest file's time:
    what a sensor needs to rebuild only the days that changed."""
    days: set[date] = set()
    newest = since_ms
    for name in (MESSAGES_TABLE, CONVERSATION_EVENTS_TABLE):
        table = open_table(table_uri(lake_root, name))
        if table is None:
            continue
        actions = pa.table(table.get_add_actions(flatten=True))
        for action in actions.select(["partition.date", "modification_time"]).to_pylist():
            modified = action["modification_time"]
            stamp = int(modified.timestamp() * 1000) if hasattr(modified, "timestamp") else modified
            if stamp > since_ms:
                days.add(date.fromisoformat(str(action["partition.date"])))
                newest = max(newest, stamp)
    return sorted(days), newest
