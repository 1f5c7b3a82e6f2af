"""A dbt invocation's artefacts go under the platform's home, and only the last few stay;
the check for a stale manifest reads the project's own files, not what runs leave."""

import os
import time

from pipelines import common


def test_each_run_gets_a_new_folder_and_only_the_last_ones_stay(tmp_path):
    made = []
    for i in range(common.KEEP_DBT_RUNS + 5):
        target = common.dbt_run_target(tmp_path, f"warehouse-{i}")
        (target / "run_results.json").write_text("{}")
        stamp = time.time() - 100 + i  # each one newer than the last
        os.utime(target, (stamp, stamp))
        made.append(target)
    kept = sorted((tmp_path / "dbt-runs").iterdir())
    assert len(kept) == common.KEEP_DBT_RUNS
    assert set(kept) == set(made[-common.KEEP_DBT_RUNS :])


def test_the_manifest_check_reads_the_project_not_the_runs():
    files = common._project_files()
    assert common.DBT_DIR / "dbt_project.yml" in files
    assert any(f.suffix == ".sql" and "models" in f.parts for f in files)
    assert not [f for f in files if "target" in f.relative_to(common.DBT_DIR).parts]
    assert not [f for f in files if "logs" in f.relative_to(common.DBT_DIR).parts]
