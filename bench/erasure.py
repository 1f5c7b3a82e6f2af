"""`chatlake bench erasure`: erasing one user from a lake of `--messages` messages.

In a temporary directory it generates the lake (bronze, as bench pipeline does, and
silver built from it), picks the user with the most messages in one tenant, and times
the lake part of an erasure (lake/erasure.py: DELETE in the four tables, the
tenant-scoped vacuum, the log clean-up) and its verification (every readable version,
every file of the tenant's partitions, every log entry). The ceiling is a plain Delta
DELETE of the same rows on a copy of the same lake (no vacuum, no log clean-up, no
verification): the least any erasure must do. The warehouse rebuild that follows in
`chatlake erase` is the pipeline's incremental run, measured by `bench pipeline`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from deltalake import DeltaTable

from bench.output import write_results
from bench.pipeline import generate_lake
from chatlake.pii import pseudonymize, tenant_pseudonym_key
from lake.datasets import arrow_dataset
from lake.erasure import SUBJECT_COLUMNS, erase_from_table, log_mentions, versions_holding
from lake.silver import build_silver

KEY = "bench-pseudonym-key"


def run(messages: int, tenants: int, days: int, out: str | None, seed: int = 11) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    today = datetime.now(UTC).date()
    with tempfile.TemporaryDirectory(prefix="chatlake-bench-erasure-") as tmp:
        lake = str(Path(tmp) / "lake")
        started = time.perf_counter()
        tenant_ids, _ = generate_lake(lake, messages, tenants, days, rng)
        build_silver(lake, today - timedelta(days=days), today, KEY)
        setup_s = time.perf_counter() - started
        bronze = arrow_dataset(DeltaTable(f"{lake}/bronze/messages")).to_table(
            columns=["tenant_id", "user_id"]
        )
        tenant = tenant_ids[0]
        counts = Counter(
            u for t, u in zip(bronze["tenant_id"].to_pylist(), bronze["user_id"].to_pylist(),
                              strict=True) if t == tenant
        )  # fmt: skip
        user, user_rows = counts.most_common(1)[0]
        subjects = {
            name: user if col == "user_id"
            else pseudonymize(user, tenant_pseudonym_key(KEY, tenant))
            for name, col in SUBJECT_COLUMNS.items()
        }  # fmt: skip
        copy = str(Path(tmp) / "ceiling")
        shutil.copytree(lake, copy)

        started = time.perf_counter()
        for name, column in SUBJECT_COLUMNS.items():
            DeltaTable(f"{copy}/{name}").delete(
                f"tenant_id = '{tenant}' AND {column} = '{subjects[name]}'"
            )
        ceiling_s = time.perf_counter() - started

        started = time.perf_counter()
        reports = [erase_from_table(lake, name, tenant, subjects[name], uuid.uuid4().hex)
                   for name in SUBJECT_COLUMNS]  # fmt: skip
        erase_s = time.perf_counter() - started
        started = time.perf_counter()
        remaining = sum(
            len(versions_holding(lake, name, tenant, subjects[name]))
            + len(log_mentions(lake, name, tenant, [subjects[name]]))
            for name in SUBJECT_COLUMNS
        )
        verify_s = time.perf_counter() - started
        total_rows = bronze.num_rows
    results = {
        "benchmark": "erasure",
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count()},
        "config": {"messages": messages, "tenants": tenants, "days": days, "seed": seed},
        "bronze_rows": total_rows,
        "setup_seconds": round(setup_s, 2),
        "subject_bronze_rows": user_rows,
        "rows_deleted": {r["table"]: r["rows_deleted"] for r in reports},
        "data_files_deleted": sum(len(r["data_files_deleted"]) for r in reports),
        "log_files_deleted": sum(r["log_files_deleted"] for r in reports),
        "erase_seconds": round(erase_s, 3),
        "verify_seconds": round(verify_s, 3),
        "traces_found_after": remaining,
        "ceiling_plain_delete_seconds": round(ceiling_s, 3),
        "ceiling_vs_erase": round(ceiling_s / erase_s, 3),
    }
    return write_results(results, out, "erasure.json")
