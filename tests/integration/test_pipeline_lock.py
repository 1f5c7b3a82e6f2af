"""Pipeline runs queue behind one another across processes (chatlake/runlock.py): two
`chatlake pipeline run` at once, and a Dagster-launched step behind a run of another process;
a sensor's evaluation, which is no run, does not wait."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path
from uuid import uuid4

import dagster as dg
import numpy as np

from bench.pipeline import generate_day, write_bronze
from pipelines.defs.lakehouse.automation import bronze_landed, lake_maintenance
from pipelines.defs.resources import LakeResource

CHATLAKE = str(Path(sys.executable).parent / "chatlake")
HOLD = """
import sys
from pathlib import Path
from chatlake.runlock import pipeline_lock
with pipeline_lock(Path(sys.argv[1]), "the test's holder"):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def test_two_pipeline_runs_at_once_both_succeed_and_the_second_waits(tmp_path):
    rng = np.random.default_rng(11)
    write_bronze(str(tmp_path / "lake"), *generate_day(date(2026, 1, 5), 40, [str(uuid4())], rng))
    env = {**os.environ, "CHATLAKE_HOME": str(tmp_path)}
    for name in ("CHATLAKE_LAKE_URI", "CHATLAKE_WAREHOUSE_PATH"):
        env.pop(name, None)
    args = [CHATLAKE, "pipeline", "run", "--no-retrain", "--no-bill"]
    runs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
        assert '"success": true' in out
    waited = [err for _, err in outputs if "waiting for chatlake pipeline run (pid" in err]
    assert len(waited) == 1, [err[-2000:] for _, err in outputs]


def test_a_dagster_step_waits_for_a_run_of_another_process_and_a_sensor_does_not(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        lake = LakeResource(root=str(tmp_path / "lake"), home=str(tmp_path))
        # a sensor's evaluation uses the lake resource too, but is no run: it goes on
        write_bronze(lake.root, *generate_day(date(2026, 1, 5), 9, [str(uuid4())],
                                              np.random.default_rng(2)))  # fmt: skip
        looked: list[dg.SensorResult] = []

        def look() -> None:
            with dg.build_sensor_context(cursor="0", resources={"lake": lake}) as context:
                looked.append(bronze_landed(context))

        sensor = threading.Thread(target=look, daemon=True)
        sensor.start()
        sensor.join(timeout=30)
        assert [[r.partition_key for r in result.run_requests] for result in looked] == [
            ["2026-01-05"]
        ]

        results: list[bool] = []
        step = threading.Thread(
            target=lambda: results.append(
                lake_maintenance.execute_in_process(resources={"lake": lake}).success
            )
        )
        step.start()
        step.join(timeout=8)
        assert step.is_alive() and results == []  # queued behind the holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    step.join(timeout=120)
    assert results == [True]
