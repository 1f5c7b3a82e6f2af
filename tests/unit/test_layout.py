"""The code location loads, the workspace points at it, and the names that callers outside
it use (chatlake/jobs.py launches `erase_subject` by name, `chatlake pipeline run` resolves
its jobs by name, scripts and dashboards name jobs, schedules and sensors) are defined."""

import yaml

from chatlake.jobs import ERASURE_JOB
from pipelines.common import WAREHOUSE_WRITER
from pipelines.definitions import defs
from pipelines.run import INSTANCE_YAML


def test_the_dagster_definitions_load():
    definitions = defs()
    assert definitions.resolve_asset_graph() is not None


def test_workspace_yaml_loads_the_pipelines_module():
    with open("workspace.yaml") as handle:
        workspace = yaml.safe_load(handle)
    module = workspace["load_from"][0]["python_module"]
    assert module["module_name"] == "pipelines.definitions"
    assert module["location_name"] == "pipelines"


def test_the_names_callers_use_are_defined():
    repository = defs().get_repository_def()
    jobs = {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")}
    assert jobs == {"lakehouse", "intent_retraining", "billing", ERASURE_JOB,
                    "lake_maintenance", "lake_retention"}  # fmt: skip
    assert {s.name: s.job_name for s in repository.schedule_defs} == {
        "lake_maintenance_schedule": "lake_maintenance",
        "lake_retention_schedule": "lake_retention",
        "intent_retraining_schedule": "intent_retraining",
        "billing_drafts": "billing",
        "billing_close": "billing",
    }
    assert {s.name: s.job_name for s in repository.sensor_defs} == {
        "bronze_landed": "lakehouse",
        "labels_arrived": "intent_retraining",
    }
    erasure = repository.get_job(ERASURE_JOB).graph.node_named("erase_subject_everywhere")
    fields = erasure.definition.config_schema.config_type.fields
    assert set(fields) == {"request_id", "tenant_id", "actor", "sealed_subject"}
    assert set(repository.get_top_level_resources()) == {
        "lake", "warehouse", "postgres", "redis", "dbt"
    }  # fmt: skip


def test_the_jobs_that_write_the_warehouse_carry_the_tag_the_instance_limits():
    limits = yaml.safe_load(INSTANCE_YAML)["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert [(limit["key"], limit["limit"]) for limit in limits] == [(*WAREHOUSE_WRITER, 1)]
    repository = defs().get_repository_def()
    writers = {job.name for job in repository.get_all_jobs()
               if WAREHOUSE_WRITER.items() <= job.tags.items()}  # fmt: skip
    assert writers == {"lakehouse", "intent_retraining", "billing", ERASURE_JOB, "lake_retention"}
