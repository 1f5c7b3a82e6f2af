"""What the code location's modules share: the lake resource (which holds the pipeline
lock while a step uses it), the daily partitions, the dbt project, and the environment dbt
reads."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtProject

from chatlake.runlock import pipeline_lock
from chatlake.settings import Settings, get_settings

DBT_DIR = Path(__file__).resolve().parent.parent / "dbt"
# One partition per UTC day; today's (still filling) partition is included.
DAILY = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_offset=1)
RANGE_START_TAG = "dagster/asset_partition_range_start"  # what a single-run backfill sets
RANGE_END_TAG = "dagster/asset_partition_range_end"


class LakeResource(dg.ConfigurableResource):
    """The Delta lake root (`CHATLAKE_LAKE_URI`, else `$CHATLAKE_HOME/lake`) and the
    platform's pseudonym key, read from the environment or the development secrets file
    when needed (never part of the run configuration the UI shows)."""

    root: str
    home: str

    def settings(self) -> Settings:
        return Settings(home=Path(self.home), lake_uri=self.root)

    def pseudonym_key(self) -> str:
        return self.settings().secret("pseudonym_key")

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[LakeResource]:
        """A step that uses the lake holds the pipeline lock (chatlake/runlock.py) while it
        runs: the runs Dagster launches queue behind `chatlake pipeline run` and the seed
        of `chatlake up` as those queue behind them (an in-process run holds it already)."""
        run = context.run_id or "?"

        def say(message: str) -> None:
            print(message, file=sys.stderr, flush=True)
            if context.log is not None:
                context.log.info(message)

        with pipeline_lock(Path(self.home), f"dagster run {run}", say):
            yield self


@contextmanager
def step_lock(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> Iterator[None]:
    """The pipeline lock for a step that touches the warehouse without the lake resource
    (the dbt build, the marts' checks); waiting is said in the run's log and on stderr."""

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        context.log.info(message)

    with pipeline_lock(get_settings().home, f"dagster run {context.run.run_id}", say):
        yield


def lake_resource() -> LakeResource:
    settings = get_settings()
    return LakeResource(root=settings.lake_root, home=str(settings.home))


def dbt_environment() -> None:
    """dbt (a subprocess that inherits this environment) reads the lake and writes the
    warehouse where the platform's settings say; dbt-only names, so the platform's own
    settings are not overridden in this process."""
    settings = get_settings()
    os.environ["DBT_CHATLAKE_LAKE_ROOT"] = settings.lake_root
    os.environ["DBT_CHATLAKE_WAREHOUSE"] = str(settings.warehouse)


def dbt_project() -> DbtProject:
    """The dbt project, with its manifest parsed when missing or older than the project."""
    dbt_environment()
    project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)
    manifest = project.manifest_path
    sources = [*DBT_DIR.glob("**/*.sql"), *DBT_DIR.glob("**/*.yml")]
    newest = max(
        (p.stat().st_mtime for p in sources if "target" not in p.parts and p.name != ".user.yml"),
        default=0,
    )  # .user.yml: dbt's own, rewritten by its runs
    if not manifest.exists() or manifest.stat().st_mtime < newest:
        import tempfile

        import fasteners
        from dbt.cli.main import dbtRunner

        # Processes that start together (two `chatlake pipeline run`, Dagster's webserver
        # and daemon) parse one at a time, and the manifest appears whole (renamed into
        # place): one reading a manifest half-written by another would fail on its JSON.
        manifest.parent.mkdir(parents=True, exist_ok=True)
        with fasteners.InterProcessLock(str(manifest.parent / "parse.lock")):
            if not manifest.exists() or manifest.stat().st_mtime < newest:
                with tempfile.TemporaryDirectory(dir=manifest.parent) as target:
                    args = ["parse", "--project-dir", str(DBT_DIR), "--profiles-dir",
                            str(DBT_DIR), "--target-path", target, "--quiet"]  # fmt: skip
                    result = dbtRunner().invoke(args)
                    if not result.success:
                        raise RuntimeError(f"dbt parse failed: {result.exception}")
                    os.replace(Path(target) / "manifest.json", manifest)
    return project


def window(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """The first and last day (inclusive) of the partitions this run materializes."""
    start, end = context.partition_time_window
    return start.date(), (end - timedelta(days=1)).date()
