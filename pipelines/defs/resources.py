"""The code location's resources, bound once here for every domain folder: the lake, the
warehouse, PostgreSQL, Redis and dbt. Their values come from the platform's settings
(`CHATLAKE_HOME`, `CHATLAKE_LAKE_URI`, `CHATLAKE_WAREHOUSE_PATH`, ...) as the code location
loads; what could be a secret (database and Redis URLs, the pseudonym key) is read when a
step asks for it and is never part of the configuration the UI shows.

A step of a run that uses the lake or the warehouse holds the pipeline lock
(chatlake/runlock.py) while it runs, so the runs Dagster launches queue behind
`chatlake pipeline run` and the seed of `chatlake up` as those queue behind them (an
in-process run holds it already; the lock is reentrant). A sensor's evaluation, which is
no run, only reads and takes no lock. PostgreSQL and Redis are found when a step connects
(the embedded stores get a new port when they restart), so a step that waits for its turn
before connecting (the erasure) holds nothing meanwhile.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
from dagster_dbt import DbtCliResource
from psycopg.rows import DictRow
from redis import Redis

from chatlake.db import owner_connection
from chatlake.embedded import Endpoints, Services
from chatlake.keyspace import redis_sync_client
from chatlake.runlock import pipeline_lock
from chatlake.settings import Settings, get_settings
from chatlake.warehouse import read_warehouse
from pipelines.common import dbt_project

DBT = str(Path(sys.executable).parent / "dbt")  # the one installed beside this Python


@contextmanager
def _run_holds_pipeline_lock(home: str, context: dg.InitResourceContext) -> Iterator[None]:
    """The pipeline lock for a run's step (waiting is said in the run's log and on
    stderr); nothing outside a run."""
    run = context.run
    if run is None:
        yield
        return

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        if context.log is not None:
            context.log.info(message)

    with pipeline_lock(Path(home), f"dagster run {run.run_id}", say):
        yield


class LakeResource(dg.ConfigurableResource):
    """The Delta lake (`root`: `CHATLAKE_LAKE_URI`, else `$CHATLAKE_HOME/lake`) of the
    platform whose home is `home`, with its pseudonym key (read from the environment or
    the development secrets file when asked for)."""

    root: str
    home: str

    def settings(self) -> Settings:
        return Settings(home=Path(self.home), lake_uri=self.root)

    def pseudonym_key(self) -> str:
        return self.settings().secret("pseudonym_key")

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[LakeResource]:
        with _run_holds_pipeline_lock(self.home, context):
            yield self


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse the dbt project builds (`path`: `CHATLAKE_WAREHOUSE_PATH`,
    else `$CHATLAKE_HOME/warehouse.duckdb`). A run's step that uses it holds the pipeline
    lock, so no other run's dbt build writes the file meanwhile."""

    path: str
    home: str

    def settings(self) -> Settings:
        return Settings(home=Path(self.home), warehouse_path=Path(self.path))

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A read-only connection for the block (None: no run has built the file yet),
        through chatlake/warehouse.py (it waits while another process writes the file)."""
        connection = read_warehouse(self.settings())
        if connection is None:
            yield None
            return
        with connection:
            yield connection

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[WarehouseResource]:
        with _run_holds_pipeline_lock(self.home, context):
            yield self


class _StoreResource(dg.ConfigurableResource):
    """A store of the platform whose home is `home`: external when its URL is set
    (`CHATLAKE_DATABASE_URL`, `CHATLAKE_REDIS_URL`), else the embedded one of that home,
    found when a step connects."""

    home: str

    def settings(self) -> Settings:
        return Settings(home=Path(self.home))

    def endpoints(self) -> Endpoints:
        """The stores' URLs now (an error saying how to start them when they are down)."""
        return Services(self.settings()).endpoints()


class PostgresResource(_StoreResource):
    """PostgreSQL: the control plane (tenants, review queues, model versions, invoices,
    compliance requests)."""

    @contextmanager
    def owner_connection(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A connection as the schema owner for the block (platform-wide reads)."""
        with owner_connection(self.endpoints().database_url) as conn:
            yield conn


class RedisResource(_StoreResource):
    """Redis: live conversations and the subject keys that seal texts and erasure
    requests."""

    @contextmanager
    def client(self) -> Iterator[Redis]:
        """A blocking client for the block, closed at its end."""
        redis = redis_sync_client(self.endpoints().redis_url)
        try:
            yield redis
        finally:
            redis.close()


@dg.definitions
def resources() -> dg.Definitions:
    settings = get_settings()
    home = str(settings.home)
    return dg.Definitions(
        resources={
            "lake": LakeResource(root=settings.lake_root, home=home),
            "warehouse": WarehouseResource(path=str(settings.warehouse), home=home),
            "postgres": PostgresResource(home=home),
            "redis": RedisResource(home=home),
            "dbt": DbtCliResource(project_dir=dbt_project(), dbt_executable=DBT),
        }
    )
