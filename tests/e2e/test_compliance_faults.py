"""Compliance jobs under faults (chatlake/jobs.py): a job whose process was killed is
shown failed, not queued forever; a queued erasure launched by Dagster holds no lock that
a running erasure of its tenant waits for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from uuid import uuid4

import fasteners
import psycopg

from chatlake.jobs import job_slot, seal_subject
from chatlake.runlock import lock_path
from tests.e2e.test_compliance_jobs import _job, _wait
from tests.utils.factories import create_tenant


def _alive(endpoints, job_id: str) -> bool:
    with psycopg.connect(endpoints.database_url) as conn:
        row = conn.execute("select compliance_job_alive(%s)", (job_id,)).fetchone()
    return bool(row and row[0])


def _backdate(endpoints, *job_ids: str) -> None:
    """Make the jobs older than the admission window (ABANDONED_AFTER)."""
    with psycopg.connect(endpoints.database_url) as conn:
        conn.execute(
            "update compliance_jobs set created_at = now() - interval '11 minutes' "
            "where job_id = any(%s)",
            (list(job_ids),),
        )


def test_a_killed_job_shows_failed_and_a_live_one_stays_queued(
    client, admin_headers, endpoints, monkeypatch
):
    monkeypatch.setattr(client.app.state.platform.settings, "dagster_url", None)
    tenant = create_tenant(client, admin_headers, name="killedjobs")
    async_ = {**tenant.headers, "Prefer": "respond-async"}

    def request(kind: str) -> str:
        path = "/v1/compliance/exports" if kind == "export" else "/v1/compliance/erasure-requests"
        headers = async_ if kind == "export" else tenant.headers
        answer = client.post(path, json={"user_id": "someone"}, headers=headers)
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["request_id"]
        _wait(lambda: _alive(endpoints, job_id), 60, f"the {kind} job's process")
        return job_id

    with job_slot(endpoints.database_url, tenant.tenant_id, "held-by-test", 2):
        export_id, erasure_id, live_id = request("export"), request("erasure"), request("export")
        for job_id in (export_id, erasure_id):  # kill -9 the two jobs' processes
            os.kill(int(_job(endpoints, job_id)["run_id"]), signal.SIGKILL)
            _wait(lambda job_id=job_id: not _alive(endpoints, job_id), 30, "the killed job")
        export_url = f"/v1/compliance/exports/{export_id}"
        erasure_url = f"/v1/compliance/erasure-requests/{erasure_id}"
        # within the window a job not yet holding its lock may be one just launched
        assert client.get(export_url, headers=tenant.headers).json()["status"] == "queued"

        _backdate(endpoints, export_id, erasure_id, live_id)
        export = client.get(export_url, headers=tenant.headers).json()
        assert export["status"] == "failed" and "abandoned" in export["error"], export
        erasure = client.get(erasure_url, headers=tenant.headers).json()
        assert erasure["status"] == "failed", erasure
        assert "abandoned" in erasure["certificate"]["error"]
        # a job whose process lives (waiting for its slot) is queued, however old
        live = client.get(f"/v1/compliance/exports/{live_id}", headers=tenant.headers).json()
        assert live["status"] == "queued", live
        os.kill(int(_job(endpoints, live_id)["run_id"]), signal.SIGKILL)


ERASE_IN_DAGSTER = """
import sys
from pipelines.definitions import defs
config = dict(zip(("tenant_id", "request_id", "sealed_subject"), sys.argv[1:]), actor="test")
defs().resolve_job_def("erase_subject").execute_in_process(
    run_config={"ops": {"erase_subject_everywhere": {"config": config}}}, raise_on_error=False
)
"""


def test_a_queued_dagster_erasure_holds_no_pipeline_lock(
    client, admin_headers, settings, endpoints, home
):
    """A `chatlake erase` that holds its tenant's slot takes the pipeline lock to rebuild the
    marts; a Dagster erasure of the same tenant, queued for that slot, must not hold it
    meanwhile (the two would wait for each other forever)."""
    tenant = create_tenant(client, admin_headers, name="dagstererasure")
    request_id = uuid4().hex
    sealed = seal_subject(client.app.state.platform.redis_sync, tenant.tenant_id, request_id,
                          "someone")  # fmt: skip
    with job_slot(endpoints.database_url, tenant.tenant_id, "held-by-test", 2):
        process = subprocess.Popen(
            [sys.executable, "-c", ERASE_IN_DAGSTER, tenant.tenant_id, request_id, sealed],
            env={**os.environ, "CHATLAKE_HOME": home},
        )
        try:
            _wait(lambda: _alive(endpoints, request_id) or process.poll() is not None, 120,
                  "the Dagster erasure's step")  # fmt: skip
            assert process.poll() is None, "the erasure step ended instead of queueing"
            assert _job(endpoints, request_id)["status"] == "queued"
            lock = fasteners.InterProcessLock(str(lock_path(settings.home)))
            assert lock.acquire(blocking=False), "the queued erasure holds the pipeline lock"
            lock.release()
        finally:
            process.kill()
            process.wait(timeout=30)
