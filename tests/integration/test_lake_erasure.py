"""Erasing one subject from the Delta lake: no row, file, log entry or older version that
holds them survives; every other user's rows are intact; a rerun and an interrupted run
end in the same place."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import numpy as np
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable

from bench.pipeline import generate_day, write_bronze
from chatlake.pii import pseudonymize, tenant_pseudonym_key
from lake.erasure import (
    SUBJECT_COLUMNS,
    erase_from_table,
    log_mentions,
    readable_versions,
    subject_predicate,
    subject_remains,
    unreferenced_files,
)
from lake.maintenance import maintain_table
from lake.silver import build_silver

KEY = "pseudonym-key"


@pytest.fixture
def lake(tmp_path):
    root = str(tmp_path / "lake")
    tenant_a, tenant_b = str(uuid4()), str(uuid4())
    rng = np.random.default_rng(21)
    today = datetime.now(UTC).date()
    for day in (today - timedelta(days=2), today - timedelta(days=1)):
        for _ in range(3):  # small commits, then a compaction that leaves the old files
            write_bronze(root, *generate_day(day, 300, [tenant_a, tenant_b], rng))
    for name in ("bronze/messages", "bronze/conversation_events"):
        maintain_table(root, name)  # keeps the compacted-away files for time travel
    build_silver(root, today - timedelta(days=2), today - timedelta(days=1), KEY)
    rows = DeltaTable(f"{root}/bronze/messages").to_pyarrow_table()
    users = Counter(
        u for u, t in zip(rows["user_id"].to_pylist(), rows["tenant_id"].to_pylist(), strict=True)
        if t == tenant_a
    )  # fmt: skip
    subject = users.most_common(1)[0][0]
    return root, tenant_a, tenant_b, subject


def _subjects(tenant: str, user: str) -> dict[str, str]:
    key = pseudonymize(user, tenant_pseudonym_key(KEY, tenant))
    return {name: user if col == "user_id" else key for name, col in SUBJECT_COLUMNS.items()}


def _others(root: str, name: str, tenant: str, subject: str) -> set[str]:
    column = SUBJECT_COLUMNS[name]
    table = DeltaTable(f"{root}/{name}").to_pyarrow_table()
    return {
        event for event, t, who in zip(table["event_id"].to_pylist(),
                                       table["tenant_id"].to_pylist(),
                                       table[column].to_pylist(), strict=True)
        if not (t == tenant and who == subject)
    }  # fmt: skip


def _files_holding(table_dir: Path, column: str, subject: str) -> list[str]:
    """Every file under the table that holds the subject: data files read column by
    column, log files searched as bytes (their statistics carry min/max values)."""
    found = []
    for path in table_dir.rglob("*"):
        if path.suffix == ".parquet" and "_delta_log" not in path.parts:
            values = pq.read_table(path, columns=[column])[column].to_pylist()
            if subject in values:
                found.append(str(path))
        elif path.is_file() and subject.encode() in path.read_bytes():
            found.append(str(path))
    return found


def test_erasure_leaves_no_trace_and_everyone_else_intact(lake):
    root, tenant, _, user = lake
    subjects = _subjects(tenant, user)
    before = {name: _others(root, name, tenant, subjects[name]) for name in SUBJECT_COLUMNS}
    held = {name: subject_remains(root, name, tenant, subjects[name]) for name in SUBJECT_COLUMNS}
    assert held["bronze/messages"] > 0 and held["silver/turns"] == held["bronze/messages"]
    assert _files_holding(Path(root, "bronze/messages"), "user_id", user)  # before: it is there

    reports = {
        name: erase_from_table(root, name, tenant, subjects[name], "req-1")
        for name in SUBJECT_COLUMNS
    }
    for name, report in reports.items():
        assert report["rows_deleted"] == held[name], name
        assert report["data_files_deleted"], name
        assert subject_remains(root, name, tenant, subjects[name]) == 0
        assert _others(root, name, tenant, subjects[name]) == before[name]  # row for row
        assert readable_versions(root, name) == [report["version_after"]]
        table_dir = Path(root, name)
        assert _files_holding(table_dir, SUBJECT_COLUMNS[name], subjects[name]) == [], name

    again = erase_from_table(root, "bronze/messages", tenant, user, "req-1")  # a rerun
    assert again["rows_deleted"] == held["bronze/messages"]  # what the request removed
    assert again["data_files_deleted"] == []
    later = erase_from_table(root, "bronze/messages", tenant, user, "req-later")
    assert later["rows_deleted"] == 0
    assert _others(root, "bronze/messages", tenant, user) == before["bronze/messages"]


def test_an_erasure_interrupted_after_its_delete_resumes_to_the_same_end(lake):
    root, tenant, _, user = lake
    held = subject_remains(root, "bronze/messages", tenant, user)
    table = DeltaTable(f"{root}/bronze/messages")
    table.delete(  # as erase_from_table does it, then the process died
        subject_predicate(tenant, "user_id", user, "req-2"),
        commit_properties=CommitProperties(custom_metadata={"erasure_request": "req-2"}),
    )
    assert unreferenced_files(table, tenant)  # the subject's old files are still on disk
    report = erase_from_table(root, "bronze/messages", tenant, user, "req-2")
    # the report counts what the interrupted run's DELETE removed
    assert report["rows_deleted"] == held > 0 and report["data_files_deleted"]
    assert _files_holding(Path(root, "bronze/messages"), "user_id", user) == []
    assert readable_versions(root, "bronze/messages") == [report["version_after"]]


def test_log_lines_holding_unicode_line_separators_are_read_whole(lake):
    """A commit's statistics carry texts as they are; JSON allows U+2028, U+0085 and
    friends unescaped inside strings, and they must not split a commit line."""
    root, tenant, _, user = lake
    rng = np.random.default_rng(5)
    messages, events = generate_day(datetime.now(UTC).date(), 20, [tenant], rng)
    texts = ["\u2028 odd \x85 text \u2029 \x1c"] * messages.num_rows
    messages = messages.set_column(messages.schema.get_field_index("text"), "text", [texts])
    write_bronze(root, messages, events)
    report = erase_from_table(root, "bronze/messages", tenant, user, "req-sep")
    assert report["rows_deleted"] > 0
    assert subject_remains(root, "bronze/messages", tenant, user) == 0


def test_the_log_is_searched_for_exact_values_in_its_statistics(tmp_path):
    root, tenant = str(tmp_path / "lake"), str(uuid4())
    messages, events = generate_day(
        datetime.now(UTC).date(), 20, [tenant], np.random.default_rng(9)
    )
    alone = messages.set_column(
        messages.schema.get_field_index("user_id"), "user_id", [["cy"] * messages.num_rows]
    )
    texts = ["see our refund policy"] * messages.num_rows  # holds "cy", but is not "cy"
    alone = alone.set_column(alone.schema.get_field_index("text"), "text", [texts])
    write_bronze(root, alone, events)
    assert log_mentions(root, "bronze/messages", tenant, ["cy"])  # min = max = "cy"
    assert log_mentions(root, "bronze/messages", tenant, ["c"]) == []
    erase_from_table(root, "bronze/messages", tenant, "cy", "req-exact")
    assert log_mentions(root, "bronze/messages", tenant, ["cy"]) == []
