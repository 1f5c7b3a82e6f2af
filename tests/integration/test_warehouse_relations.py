"""The warehouse file after a real pipeline run: every table and view in it can be read by
a plain DuckDB connection (the dashboards', billing's, an analyst's), not only inside the
dbt session that built it (where the Delta sources are registered dataframes), also when
an earlier build left such views behind; and `dbt show` and `dbt compile`, which run no
hooks, add nothing to it."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import duckdb
import numpy as np
import pyarrow as pa

from bench.pipeline import generate_day, write_bronze
from pipelines.common import DBT_DIR
from pipelines.defs.resources import DBT
from pipelines.run import run_pipeline


def test_every_relation_in_the_warehouse_is_readable_by_a_plain_connection(own_lake, tmp_path):
    settings = own_lake
    day = datetime.now(UTC).date() - timedelta(days=2)
    write_bronze(
        settings.lake_root, *generate_day(day, 60, [str(uuid4())], np.random.default_rng(7))
    )
    # what a build by an earlier version of the project left: the staging models as views
    # over the source plugin's views, over a dataframe registered in that build's session
    with duckdb.connect(str(settings.warehouse)) as earlier:
        earlier.register("earlier_session_turns_df", pa.table({"event_id": ["x"]}))
        earlier.execute("create schema silver")
        earlier.execute("create view silver.turns as select * from earlier_session_turns_df")
        earlier.execute("create view stg_turns as select * from silver.turns")
    result = run_pipeline(settings, day, day)
    assert result["success"], result

    relations = _relations(settings.warehouse)
    marts = {path.stem for path in (DBT_DIR / "models" / "marts").glob("*.sql")}
    assert marts and marts <= {name for _, _, name in relations}, relations
    _assert_readable(settings.warehouse, relations)

    # by hand, in the dbt project's folder: a source and an ephemeral model shown (each
    # read through the source plugin's views, in dbt's session), every model compiled
    env = {**os.environ, "DBT_CHATLAKE_WAREHOUSE": str(settings.warehouse),
           "DBT_CHATLAKE_LAKE_ROOT": settings.lake_root}  # fmt: skip
    scratch = ["--target-path", str(tmp_path / "dbt"), "--log-path", str(tmp_path / "dbt")]
    for command in (
        ["show", "--inline", "select * from {{ source('silver', 'turns') }}"],
        ["show", "--select", "stg_conversation_events"],
        ["compile"],
    ):
        done = subprocess.run(
            [DBT, *command, *scratch, "--output", "json", "--quiet"],
            cwd=DBT_DIR, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        if command[0] == "show":
            assert json.loads(done.stdout)["show"], command
    assert _relations(settings.warehouse) == relations


def _relations(path: Path) -> list[tuple[str, str, str]]:
    """(catalog, schema, name) of every table and view in the warehouse file."""
    with duckdb.connect(str(path), read_only=True) as warehouse:
        tables = warehouse.execute(
            "select table_catalog, table_schema, table_name from information_schema.tables"
        ).fetchall()
        views = warehouse.execute(
            "select database_name, schema_name, view_name from duckdb_views() where not internal"
        ).fetchall()
    return sorted(set(tables) | set(views))


def _assert_readable(path: Path, relations: list[tuple[str, str, str]]) -> None:
    unreadable = {}
    with duckdb.connect(str(path), read_only=True) as warehouse:
        for catalog, schema, name in relations:
            try:
                warehouse.execute(
                    f'select * from "{catalog}"."{schema}"."{name}" limit 1'
                ).fetchall()
            except duckdb.Error as exc:
                unreadable[f"{catalog}.{schema}.{name}"] = str(exc).splitlines()[0]
    assert unreadable == {}, "\n".join(f"{name}: {error}" for name, error in unreadable.items())
