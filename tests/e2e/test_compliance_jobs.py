"""Erasures and exports as queued jobs (chatlake/jobs.py): one running per tenant, the
API process never reading the lake, the subject sealed on the job's command line, the
bundle written as it is read; and the privacy of what erasure leaves behind (access log,
keyed digests)."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import httpx
import psutil
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from lake.schemas import MESSAGES_TABLE, TABLE_SCHEMAS
from lake.writer import DeltaAppender
from tests.e2e.test_cli import CHATLAKE, run
from tests.e2e.test_erasure import converse
from tests.utils.factories import create_tenant

ROUTE_IMPORTS = """
import sys
import realtime.api.routes.compliance
print(sorted(m for m in ("deltalake", "duckdb", "polars") if m in sys.modules))
"""


def _wait(predicate, timeout: float = 180.0, what: str = "the job"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} did not get there in {timeout}s")


def _bronze(settings, tenant_id: str, user_id: str, rows: int) -> None:
    """`rows` messages of one user straight into bronze (a big tenant, quickly)."""
    schema = TABLE_SCHEMAS[MESSAGES_TABLE]
    now = datetime.now(UTC)
    columns = {f.name: [None] * rows for f in schema}
    columns.update(
        event_id=[uuid4().hex for _ in range(rows)], event_type=["message"] * rows,
        tenant_id=[tenant_id] * rows, conversation_id=[f"c-{i // 50}" for i in range(rows)],
        user_id=[user_id] * rows, channel=["web"] * rows, direction=["in"] * rows,
        type=["text"] * rows, text=[f"line {i} " + "x" * 40 for i in range(rows)],
        created_at=[now] * rows, date=[now.date()] * rows,
    )  # fmt: skip
    table = pa.Table.from_pydict(columns, schema=schema)
    DeltaAppender(settings.lake_root, MESSAGES_TABLE).append(table, f"big-{uuid4().hex}", 1)


def _job(endpoints, job_id: str) -> dict:
    with psycopg.connect(endpoints.database_url) as conn:
        row = conn.execute(
            "select status, run_id, started_at, finished_at from compliance_jobs where job_id = %s",
            (job_id,),
        ).fetchone()
    return dict(zip(("status", "run_id", "started_at", "finished_at"), row, strict=True))


def test_the_export_route_imports_no_lake_library():
    found = subprocess.run([sys.executable, "-c", ROUTE_IMPORTS], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert json.loads(found.replace("'", '"')) == []


def test_a_big_export_is_a_job_that_streams_and_jobs_of_a_tenant_queue(
    client, admin_headers, settings, endpoints, home, monkeypatch
):
    from chatlake.jobs import job_slot

    monkeypatch.setattr(client.app.state.platform.settings, "dagster_url", None)
    tenant, other = (create_tenant(client, admin_headers, name=n) for n in ("bigco", "smallco"))
    subject = f"big-{uuid4().hex[:8]}@example.com"
    _bronze(settings, tenant.tenant_id, subject, 30_000)
    converse(client, other, "someone", ["hello"])
    async_ = {**tenant.headers, "Prefer": "respond-async"}

    # a job of the tenant is running (this test holds its slot): what comes after waits
    with job_slot(endpoints.database_url, tenant.tenant_id, "held-by-test", 2):
        export = client.post("/v1/compliance/exports", json={"user_id": subject}, headers=async_)
        assert export.status_code == 202, export.text
        export_id = export.json()["request_id"]
        erasure = client.post("/v1/compliance/erasure-requests", json={"user_id": "nobody"},
                              headers=tenant.headers)  # fmt: skip
        assert erasure.status_code == 202 and erasure.json()["status"] == "queued"
        erasure_id = erasure.json()["request_id"]
        # the processes are up and waiting; the erasure's command line holds no raw id
        pid = int(_job(endpoints, erasure_id)["run_id"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"--sealed-subject" in cmdline and b"nobody" not in b" ".join(cmdline)
        export_cmd = Path(f"/proc/{_job(endpoints, export_id)['run_id']}/cmdline").read_bytes()
        assert subject.encode() not in export_cmd
        # another tenant is not held up by this one
        theirs = client.post("/v1/compliance/exports", json={"user_id": "someone"},
                             headers={**other.headers, "Prefer": "respond-async"})  # fmt: skip
        theirs_id = theirs.json()["request_id"]
        _wait(lambda: _job(endpoints, theirs_id)["status"] == "completed", what="other tenant")
        for job_id in (export_id, erasure_id):
            assert _job(endpoints, job_id)["status"] == "queued"
        url = f"/v1/compliance/exports/{export_id}"
        assert client.get(url, headers=tenant.headers).json()["status"] == "queued"
        assert client.get(f"{url}/bundle", headers=tenant.headers).status_code == 409
        assert client.get(url, headers=other.headers).status_code == 404

    done = _wait(lambda: all(_job(endpoints, j)["status"] in ("completed", "failed")
                             for j in (export_id, erasure_id)))  # fmt: skip
    assert done
    first, second = sorted((_job(endpoints, j) for j in (export_id, erasure_id)),
                           key=lambda j: j["started_at"])  # fmt: skip
    assert first["finished_at"] <= second["started_at"]  # one at a time for the tenant
    status = client.get(url, headers=tenant.headers).json()
    assert status["status"] == "completed", status
    bundle = client.get(status["bundle_url"], headers=tenant.headers)
    assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/zip"
    assert hashlib.sha256(bundle.content).hexdigest() == status["sha256"]
    archive = zipfile.ZipFile(io.BytesIO(bundle.content))
    messages = pq.ParquetFile(io.BytesIO(archive.read("messages.parquet")))
    assert messages.metadata.num_rows == 30_000
    assert messages.metadata.num_row_groups > 1  # appended batch by batch as it was read
    assert json.loads(archive.read("subject.json"))["stores"]["lake"]["messages"] == 30_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_erasure_after_the_subject_was_read_by_id_passes_and_the_log_holds_no_id(
    client, admin_headers, settings, endpoints, home
):
    """The API as `up` runs it: its access log on, into run/api.log."""
    tenant = create_tenant(client, admin_headers, name="logged")
    subject = f"read-{uuid4().hex[:8]}@example.com"
    conversation = converse(client, tenant, subject, ["hello", "where is my order?"])
    port = _free_port()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.run_dir / "api.log"
    env = {**os.environ, "CHATLAKE_HOME": home, "CHATLAKE_ACCESS_LOG": "true"}
    with open(log_path, "ab") as log:
        api = subprocess.Popen([CHATLAKE, "serve", "--port", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(ready, 60, "the API")
        read = httpx.get(f"{base}/v1/conversations/{conversation}", headers=tenant.headers)
        assert read.status_code == 200
        linked = httpx.post(f"{base}/v1/identities", headers=tenant.headers,
                            json={"user_id": subject, "channel": "whatsapp",
                                  "external_id": "+15550009999"})  # fmt: skip
        assert linked.status_code == 201, linked.text
        gone = httpx.delete(f"{base}/v1/identities/whatsapp/+15550009999", headers=tenant.headers)
        assert gone.status_code in (200, 204), gone.text
        _wait(lambda: b"/v1/conversations/" in log_path.read_bytes(), 30, "the access log")
        erased = run("erase", "--tenant", tenant.tenant_id, "--user", subject, home=home,
                     check=False)  # fmt: skip
        assert erased.stdout, erased.stderr[-12000:]
        certificate = json.loads(erased.stdout)
        assert certificate["verification"]["passed"], certificate["verification"]
        with psycopg.connect(endpoints.database_url) as conn:
            (status,) = conn.execute(
                "select status from erasure_requests where request_id = %s",
                (certificate["request_id"],),
            ).fetchone()
        assert status == "completed"
        logged = log_path.read_bytes()
        for raw in (conversation, subject, "15550009999"):
            assert raw.encode() not in logged, raw
        assert b"/v1/conversations/{conversation_id}" in logged  # the route template
    finally:
        api.terminate()
        api.wait(30)


def test_new_audit_entries_name_the_subject_by_a_keyed_digest(
    client, admin_headers, settings, endpoints, home, monkeypatch
):
    monkeypatch.setattr(client.app.state.platform.settings, "dagster_url", None)
    tenant = create_tenant(client, admin_headers, name="digests")
    subject = "+15550001234"
    response = client.post("/v1/compliance/erasure-requests", json={"user_id": subject},
                           headers=tenant.headers)  # fmt: skip
    assert response.status_code == 202
    request_id = response.json()["request_id"]
    with psycopg.connect(endpoints.database_url) as conn:
        (detail,) = conn.execute(
            """select detail from audit_log
               where target = %s and action = 'compliance.erasure.requested'""",
            (request_id,),
        ).fetchone()
    unkeyed = hashlib.sha256(f"{tenant.tenant_id}\x1f{subject}".encode()).hexdigest()
    assert detail["subject_digest"] != unkeyed
    assert detail["subject_digest_scheme"] == "hmac-sha256"
    from chatlake.jobs import subject_digest_key

    keyed = hmac.new(subject_digest_key(settings), f"{tenant.tenant_id}\x1f{subject}".encode(),
                     hashlib.sha256).hexdigest()  # fmt: skip
    assert detail["subject_digest"] == keyed
    url = f"/v1/compliance/erasure-requests/{request_id}"
    body = _wait(lambda: (b := client.get(url, headers=tenant.headers).json())["status"]
                 in ("completed", "failed") and b)  # fmt: skip
    assert body["status"] == "completed", body
    assert body["certificate"]["subject_digest"] == keyed
    assert body["certificate"]["subject_digest_scheme"] == "hmac-sha256"


def _children_for(tenant_id: str) -> list[psutil.Process]:
    """This process's live `chatlake erase|export` children for the tenant."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and tenant_id in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _alive_jobs(endpoints, tenant_id: str) -> int:
    """The tenant's jobs whose process holds its liveness lock (chatlake/jobs.py)."""
    with psycopg.connect(endpoints.database_url) as conn:
        (count,) = conn.execute(
            """select count(*) from compliance_jobs
               where tenant_id = %s and status in ('queued', 'running')
                 and compliance_job_alive(job_id)""",
            (tenant_id,),
        ).fetchone()
    return count


def _rows(endpoints, table: str, tenant_id: str) -> int:
    with psycopg.connect(endpoints.database_url) as conn:
        (count,) = conn.execute(f"select count(*) from {table} where tenant_id = %s",
                                (tenant_id,)).fetchone()  # fmt: skip
    return count


def test_a_flood_of_requests_is_bounded_per_tenant_and_platform_wide(
    client, admin_headers, endpoints, monkeypatch
):
    """Every accepted request is a process waiting for its slot: beyond the tenant's (and
    the platform's) bound of queued and running jobs a request is a 429 that records and
    starts nothing, counted race-free under concurrent requests; a job whose process died
    stops counting; another tenant is not held back."""
    from chatlake import jobs
    from chatlake.jobs import job_slot

    settings = client.app.state.platform.settings
    monkeypatch.setattr(settings, "dagster_url", None)
    monkeypatch.setattr(settings, "compliance_max_queued_per_tenant", 3)
    tenant, other = (create_tenant(client, admin_headers, name=n) for n in ("floods", "calm"))
    async_ = {**tenant.headers, "Prefer": "respond-async"}

    def export(headers: dict[str, str]) -> httpx.Response:
        return client.post("/v1/compliance/exports", json={"user_id": "u1"}, headers=headers)

    with job_slot(endpoints.database_url, tenant.tenant_id, "held-by-test", 2):
        with ThreadPoolExecutor(8) as pool:  # at once: the count and insert must not race
            flood = list(pool.map(lambda _: export(async_), range(8)))
        assert sorted(r.status_code for r in flood) == [202] * 3 + [429] * 5, flood
        refused = next(r for r in flood if r.status_code == 429)
        assert refused.json()["error"]["code"] == "too_many_compliance_jobs"
        assert int(refused.headers["Retry-After"]) > 0
        erasure = client.post("/v1/compliance/erasure-requests", json={"user_id": "u1"},
                              headers=tenant.headers)  # fmt: skip
        assert erasure.status_code == 429, erasure.text
        # nothing recorded and nothing started for the refused ones
        assert _rows(endpoints, "compliance_jobs", tenant.tenant_id) == 3
        assert _rows(endpoints, "erasure_requests", tenant.tenant_id) == 0
        assert len(_children_for(tenant.tenant_id)) == 3
        # another tenant is not held back by this one's flood
        theirs = export({**other.headers, "Prefer": "respond-async"})
        assert theirs.status_code == 202, theirs.text

        # a job whose process was killed while it waited no longer takes a place
        _wait(lambda: _alive_jobs(endpoints, tenant.tenant_id) == 3, 120, "the jobs' locks")
        _children_for(tenant.tenant_id)[0].kill()
        with psycopg.connect(endpoints.database_url) as conn:  # older than the window
            conn.execute("update compliance_jobs set created_at = now() - %s where tenant_id = %s",
                         (jobs.ABANDONED_AFTER, tenant.tenant_id))  # fmt: skip
        _wait(lambda: _alive_jobs(endpoints, tenant.tenant_id) == 2, 60, "the killed job")
        assert export(async_).status_code == 202
        _wait(lambda: _alive_jobs(endpoints, tenant.tenant_id) == 3, 120, "the new job's lock")
        assert export(async_).status_code == 429

        # the platform's bound counts every tenant's jobs
        monkeypatch.setattr(settings, "compliance_max_queued", 3)
        crowded = export({**other.headers, "Prefer": "respond-async"})
        assert crowded.status_code == 429, crowded.text
        assert "platform" in crowded.json()["error"]["message"]

    _wait(lambda: _alive_jobs(endpoints, tenant.tenant_id) == 0, what="the tenant's jobs")
    _wait(lambda: not _children_for(tenant.tenant_id), 60, "the jobs' processes to exit")
