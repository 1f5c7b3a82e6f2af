"""The API process stays lean: importing the app (and building it) loads no lake, pipeline,
warehouse or model-fitting library (scikit-learn, and with it pandas and pyarrow, load only
when a tenant trains). import-linter holds the whole layering (`make lint`, `.ci/run`);
this proves the running process, indirect and lazy imports at start included."""

import json
import subprocess
import sys

HEAVY = ("lake", "pipelines", "deltalake", "duckdb", "polars", "dagster", "dagster_graphql",
         "dagster_dbt", "dbt", "streamlit", "sklearn", "scipy", "pandas", "pyarrow")  # fmt: skip


def loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)  # fmt: skip
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def test_the_api_loads_no_lake_pipeline_or_warehouse_library():
    assert loaded_after("import realtime.app\nrealtime.app.create_app()") == []


def test_the_event_contract_and_the_job_launcher_are_as_light():
    assert loaded_after("import chatlake.events, chatlake.jobs, chatlake.streams") == []
