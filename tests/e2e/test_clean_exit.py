"""A process that read the lake through pyarrow exits 0 every time its work succeeded.

deltalake's default dataset reads through a filesystem written in Python, and Arrow's I/O
threads calling into a finalizing interpreter aborted 3 of 10 plain reads here (exit 134,
`terminate called without an active exception`, apache/arrow#34314). Every lake read now
goes through `lake.datasets.arrow_dataset` (Arrow's own filesystem), and the CLI ends with
`os._exit` once its output is flushed."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from bench.pipeline import generate_day, write_bronze

CHATLAKE = str(Path(sys.executable).parent / "chatlake")
RUNS = 20


def test_a_lake_reading_command_exits_0_every_time(services, home, tenant, tmp_path):
    lake = tmp_path / "lake"
    rng = np.random.default_rng(7)
    frames = generate_day(date(2026, 1, 7), 60, [tenant.tenant_id], rng)
    write_bronze(str(lake), *frames)
    user = frames[0]["user_id"][0].as_py()
    env = {**os.environ, "CHATLAKE_HOME": home, "CHATLAKE_LAKE_URI": str(lake),
           "CHATLAKE_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb")}  # fmt: skip
    codes = []
    for attempt in range(RUNS):
        out = tmp_path / f"bundle-{attempt}.zip"
        result = subprocess.run(
            [CHATLAKE, "export", "--tenant", tenant.tenant_id, "--user", user, "--out", str(out)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        codes.append(result.returncode)
        assert result.returncode != 1, result.stderr[-2000:]  # a real failure, not the abort
    assert codes == [0] * RUNS, codes


READ = """
import sys
from deltalake import DeltaTable
from lake.datasets import arrow_dataset
print(arrow_dataset(DeltaTable(sys.argv[1])).to_table().num_rows)
"""


def test_a_plain_lake_read_exits_0_every_time(tmp_path):
    table = str(tmp_path / "table")
    rows = 200_000
    for day in range(1, 9):  # several partitions and files: Arrow reads them on its threads
        write_deltalake(
            table,
            pa.table({"tenant_id": [f"t{day % 4}"] * rows, "day": [day] * rows,
                      "n": np.arange(rows), "text": ["hello world"] * rows}),
            partition_by=["tenant_id", "day"], mode="append",
        )  # fmt: skip
    codes = []
    for _ in range(RUNS):
        result = subprocess.run(
            [sys.executable, "-c", READ, table], capture_output=True, text=True, timeout=120
        )
        codes.append(result.returncode)
        if result.returncode == 0:
            assert result.stdout.strip() == str(8 * rows)
    assert codes == [0] * RUNS, codes


def test_every_lake_read_uses_arrows_own_filesystem():
    """`DeltaTable.to_pyarrow_dataset()` (and `to_pyarrow_table()`, which uses it) without a
    filesystem read through the Python one above."""
    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(path.relative_to(root))
        for folder in ("chatlake", "realtime", "lake", "pipelines", "compliance", "dashboards",
                       "bench")
        for path in (root / folder).rglob("*.py")
        if any(call in path.read_text() for call in (".to_pyarrow_dataset(", ".to_pyarrow_table("))
        and path.name != "datasets.py"
    ]  # fmt: skip
    assert offenders == []
