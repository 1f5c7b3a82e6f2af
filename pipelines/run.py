"""`chatlake pipeline run`: the lakehouse job in-process, over every day that has data (or
the days given), as one single-run backfill, recorded in the Dagster instance under
`$CHATLAKE_HOME/dagster` so the UI shows it. Every run here holds the pipeline lock
(chatlake/runlock.py): a second one, in this process or another, queues behind it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from chatlake.errors import ChatlakeError
from chatlake.runlock import pipeline_lock
from chatlake.settings import Settings


def _this_command() -> str:
    """How the waiting runs name this one: the command line's first words."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("chatlake", "__main__.py"):
        return " ".join(["chatlake", *[a for a in sys.argv[1:] if not a.startswith("-")][:2]])
    return program


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Run logs (Dagster's, dbt's) go to stderr, so stdout carries only the JSON result."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# The instance's settings, written once (an operator's own edits are kept): runs queue and
# are picked up within a second; one run at a time writes the DuckDB warehouse (DuckDB
# takes one writer per file: the jobs tagged `WAREHOUSE_WRITER` of pipelines/common.py),
# others run beside it; no telemetry.
INSTANCE_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
      - key: chatlake/warehouse
        limit: 1
telemetry:
  enabled: false
"""


def dagster_home(settings: Settings) -> str:
    path = settings.home / "dagster"
    path.mkdir(parents=True, exist_ok=True)
    instance = path / "dagster.yaml"
    if not instance.exists():
        instance.write_text(INSTANCE_YAML)
    return str(path)


def run_pipeline(
    settings: Settings,
    first: date | None = None,
    last: date | None = None,
    retrain: bool = False,
    bill: bool = False,
) -> dict[str, Any]:
    """The lakehouse job over the days; with `retrain`, then the intent-retraining job
    (review queues, candidates, the gate), as the nightly schedule runs it; with `bill`,
    then the billing job over the window's months and the current one (drafts). Waits
    for the pipeline lock first, so concurrent runs queue rather than fail."""
    with pipeline_lock(settings.home, _this_command()):
        return _run_pipeline(settings, first, last, retrain, bill)


def _run_pipeline(
    settings: Settings, first: date | None, last: date | None, retrain: bool, bill: bool
) -> dict[str, Any]:
    os.environ.setdefault("DAGSTER_HOME", dagster_home(settings))
    from dagster import DagsterInstance

    from lake.silver import bronze_days
    from pipelines.common import RANGE_END_TAG, RANGE_START_TAG
    from pipelines.definitions import defs

    if retrain or bill:  # review queues, models and invoices live in PostgreSQL and Redis
        from chatlake.embedded import Services

        try:
            Services(settings).endpoints()
        except ChatlakeError as exc:
            raise ChatlakeError(
                f"{exc} (or pass --no-retrain --no-bill: the lakehouse alone)"
            ) from None
    # no data yet: today, so that every table and mart exists (empty)
    days = bronze_days(settings.lake_root) or [datetime.now(UTC).date()]
    first, last = first or days[0], last or days[-1]
    if first > last:
        raise ChatlakeError(f"--from {first} is after --to {last}")
    job = defs().resolve_job_def("lakehouse")
    started = time.perf_counter()
    with DagsterInstance.get() as instance, _stdout_to_stderr():
        result = job.execute_in_process(
            instance=instance,
            tags={RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()},
            raise_on_error=False,
        )
    materialized = sorted(
        {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
         if e.asset_key is not None}
    )  # fmt: skip
    checks = {
        f"{e.asset_check_evaluation_data.asset_key.to_user_string()}:"
        f"{e.asset_check_evaluation_data.check_name}": e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    report: dict[str, Any] = {"success": result.success}
    if retrain and result.success:
        report["retraining"] = run_retraining(settings)
        report["success"] = report["retraining"]["success"]
    if bill and result.success:
        from pipelines.billing import months_between

        today = datetime.now(UTC).date()
        months = sorted({*months_between(first, last), today.replace(day=1)})
        report["billing"] = run_billing(settings, months)
        report["success"] = report["success"] and report["billing"]["success"]
    return {
        **report,
        "run_id": result.run_id,
        "days": [first.isoformat(), last.isoformat()],
        "seconds": round(time.perf_counter() - started, 2),
        "materialized": materialized,
        "checks_passed": sum(checks.values()),
        "checks_failed": sorted(name for name, passed in checks.items() if not passed),
        "warehouse": str(settings.warehouse),
    }


def run_retraining(settings: Settings) -> dict[str, Any]:
    """The intent-retraining job in-process (review queues, candidates, the gate), as the
    nightly schedule runs it; its outcome per tenant from the materialization."""
    os.environ.setdefault("DAGSTER_HOME", dagster_home(settings))
    from dagster import DagsterInstance

    from pipelines.definitions import defs

    with (
        pipeline_lock(settings.home, _this_command()),
        DagsterInstance.get() as instance,
        _stdout_to_stderr(),
    ):
        result = (
            defs()
            .resolve_job_def("intent_retraining")
            .execute_in_process(instance=instance, raise_on_error=False)
        )
    outcomes = [
        e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key is not None and e.asset_key.to_user_string() == "intent_models"
    ]
    return {
        "run_id": result.run_id,
        "success": result.success,
        **{k: v.value for k, v in (outcomes[0].items() if outcomes else [])},
    }


def run_billing(settings: Settings, months: list[date], close: bool = False) -> dict[str, Any]:
    """The billing job in-process over `months` (one single-run backfill per stretch of
    consecutive months, so a gap is not billed): drafts brought up to date, or with
    `close` finalized; the invoices' outcomes, summed."""
    os.environ.setdefault("DAGSTER_HOME", dagster_home(settings))
    from dagster import DagsterInstance

    from pipelines.billing import month_stretches
    from pipelines.common import RANGE_END_TAG, RANGE_START_TAG
    from pipelines.definitions import defs

    config = {"ops": {"invoices": {"config": {"close": close}}}}
    labels = [m.strftime("%Y-%m") for m in sorted(set(months))]
    report: dict[str, Any] = {"run_ids": [], "success": True, "months": labels}
    job = defs().resolve_job_def("billing")
    for first, last in month_stretches(months):
        with (
            pipeline_lock(settings.home, _this_command()),
            DagsterInstance.get() as instance,
            _stdout_to_stderr(),
        ):
            result = job.execute_in_process(
                instance=instance,
                run_config=config,
                tags={RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()},
                raise_on_error=False,
            )
        report["run_ids"].append(result.run_id)
        report["success"] = report["success"] and result.success
        for event in result.all_events:
            if event.is_step_failure and "error" not in report:
                report["error"] = _failure_text(event.step_failure_data)
        for event in result.get_asset_materialization_events():
            for key, value in event.step_materialization_data.materialization.metadata.items():
                if isinstance(value.value, int):
                    report[key] = report.get(key, 0) + value.value
                elif isinstance(value.value, list):
                    report[key] = report.get(key, []) + value.value
    report["run_id"] = report["run_ids"][0] if report["run_ids"] else None
    return report


def _failure_text(data: Any) -> str:
    """What a failed step said: its `dg.Failure` description, else the error's message."""
    if data.user_failure_data is not None and data.user_failure_data.description:
        return str(data.user_failure_data.description)
    return str(data.error.message).strip() if data.error else "the step failed"
