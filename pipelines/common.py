"""What the code location's domain folders share: the daily partitions and the tags of a
single-run backfill, the tag of the jobs that write the warehouse, the dbt project and the
environment dbt reads. The resources are in `defs/resources.py`."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtProject

from chatlake.settings import get_settings

DBT_DIR = Path(__file__).resolve().parent.parent / "dbt"
# One partition per UTC day; today's (still filling) partition is included.
DAILY = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_offset=1)
RANGE_START_TAG = "dagster/asset_partition_range_start"  # what a single-run backfill sets
RANGE_END_TAG = "dagster/asset_partition_range_end"
# The tag of the jobs that write the warehouse (or must not run while it is written): the
# instance that `chatlake pipeline run` sets up runs one of them at a time (run.py).
WAREHOUSE_WRITER = {"chatlake/warehouse": "writer"}


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
    newest = max((p.stat().st_mtime for p in _project_files()), default=0)
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


def _project_files() -> list[Path]:
    """What a parse reads: the project's and profiles' files, models, macros and tests
    (not `target/` or `logs/`, which runs fill)."""
    files = [DBT_DIR / "dbt_project.yml", DBT_DIR / "profiles.yml"]
    for folder in ("models", "macros", "tests"):
        files += [*(DBT_DIR / folder).rglob("*.sql"), *(DBT_DIR / folder).rglob("*.yml")]
    return [f for f in files if f.exists()]


KEEP_DBT_RUNS = 10


def dbt_run_target(home: Path, name: str) -> Path:
    """A new folder for one dbt invocation's artefacts (compiled SQL, run results, its log)
    under `$CHATLAKE_HOME/dbt-runs/`, beside the platform's other run state rather than in
    the project; the oldest beyond the last `KEEP_DBT_RUNS` are removed."""
    import shutil
    import uuid

    runs = home / "dbt-runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(runs.iterdir(), key=lambda p: p.stat().st_mtime)[: -KEEP_DBT_RUNS + 1]:
        shutil.rmtree(old, ignore_errors=True)
    target = runs / f"{name}-{uuid.uuid4().hex[:8]}"
    target.mkdir()
    return target


def window(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """The first and last day (inclusive) of the partitions this run materializes."""
    start, end = context.partition_time_window
    return start.date(), (end - timedelta(days=1)).date()
