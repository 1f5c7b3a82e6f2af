"""Erasure of one user, end to end: seeded through the real API, ingest and pipelines,
erased with `chatlake erase`, then proven gone from every store while every other user's
data (the same user id in another tenant included) is intact, row for row."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import psycopg
import pyarrow.parquet as pq
import redis as redis_lib
from deltalake import DeltaTable

from chatlake.keyspace import TenantKeyspace
from chatlake.pii import pseudonymize, tenant_pseudonym_key
from lake.erasure import SUBJECT_COLUMNS, versions_holding
from pipelines.run import run_pipeline
from tests.e2e.test_cli import run, run_with_env
from tests.integration.test_ingest import run_ingest
from tests.utils.factories import create_tenant

SECRET = "zebra-4471-marmalade"  # only the subject ever writes this


def converse(client, tenant, user, texts):
    conversation = None
    for text in texts:
        body = {"user_id": user, "text": text} | (
            {"conversation_id": conversation} if conversation else {}
        )
        response = client.post("/v1/messages", json=body, headers=tenant.headers)
        assert response.status_code == 200, response.text
        conversation = response.json()["conversation_id"]
    return conversation


def bronze_rows(settings) -> set[tuple[str, str, str]]:
    table = DeltaTable(f"{settings.lake_root}/bronze/messages").to_pyarrow_table()
    return set(zip(table["event_id"].to_pylist(), table["tenant_id"].to_pylist(),
                   table["user_id"].to_pylist(), strict=True))  # fmt: skip


def pseudonym(settings, tenant_id: str, user_id: str) -> str:
    return pseudonymize(user_id, tenant_pseudonym_key(settings.secret("pseudonym_key"), tenant_id))


def files_with(home: Path, needle: str) -> list[str]:
    """Every file under the home that holds `needle`: parquet files read as tables (their
    pages are compressed), everything else as bytes; PostgreSQL's directory excepted."""
    found = []
    for path in home.rglob("*"):
        if not path.is_file() or "postgres" in path.relative_to(home).parts[:1]:
            continue
        if path.suffix == ".parquet":
            try:
                text = str(pq.read_table(path).to_pylist())
            except Exception:
                text = path.read_bytes().decode("latin-1")
        else:
            text = path.read_bytes().decode("latin-1")
        if needle in text:
            found.append(str(path.relative_to(home)))
    return found


def test_a_user_is_erased_everywhere_and_nobody_else_is_touched(
    client, admin_headers, settings, home, endpoints
):
    subject = f"ana-{uuid4().hex[:8]}@example.com"
    tenant, other_tenant = (create_tenant(client, admin_headers, name=n) for n in ("era", "erb"))
    converse(client, tenant, subject, ["hello", f"my phrase is {SECRET}", "talk to a human"])
    converse(client, tenant, "ben", ["hello", "where is my order?"])
    converse(client, other_tenant, subject, ["hello", "same id, other tenant"])
    alias = "whatsapp:15550001111"  # the subject on WhatsApp, before the link below
    converse(client, tenant, alias, [f"on whatsapp {SECRET}"])
    assert run_ingest(home, f"era-{uuid4().hex[:6]}").returncode == 0
    assert run_pipeline(settings)["success"]
    late = converse(client, tenant, subject, [f"again {SECRET}"])  # still in the stream
    # the subject on a channel: an identity link, and a reply the channel would not take
    linked = client.post("/v1/identities", json={"user_id": subject, "channel": "whatsapp",
                                                 "external_id": "15550001111"},
                         headers=tenant.headers)  # fmt: skip
    assert linked.status_code == 201
    keys = TenantKeyspace(tenant.tenant_id)
    r = redis_lib.Redis.from_url(endpoints.redis_url)
    letter = {"channel": "whatsapp", "user_id": subject, "conversation_id": late,
              "address": {"to": "15550001111"}, "body": {"text": {"body": SECRET}},
              "error": "HTTP 400", "attempts": 1, "at": "2026-11-26T00:00:00+00:00"}  # fmt: skip
    r.xadd(keys.channel_dead_letters, {"event": json.dumps(letter)})
    kept = {r for r in bronze_rows(settings)
            if not (r[1] == tenant.tenant_id and r[2] in (subject, alias))}  # fmt: skip
    assert files_with(Path(home), SECRET)  # before: in the lake, the warehouse, Redis

    result = run("erase", "--tenant", tenant.tenant_id, "--user", subject, home=home, check=False)
    assert result.stdout, result.stderr[-3000:]
    certificate = json.loads(result.stdout)
    assert certificate["verification"]["passed"], certificate["verification"]
    assert subject not in result.stdout  # the certificate names a digest, not the subject
    lake = {t["table"]: t for t in certificate["stores"]["lake"]}
    assert lake["bronze/messages"]["rows_deleted"] >= 6
    assert lake["silver/turns"]["rows_deleted"] == lake["bronze/messages"]["rows_deleted"]
    assert certificate["stores"]["redis"]["stream_entries_deleted"] >= 2  # the late turn
    assert certificate["stores"]["redis"]["conversations"] == 2
    assert certificate["stores"]["redis"]["channel_dead_letters_deleted"] == 1
    assert certificate["stores"]["postgresql"]["rows_deleted"]["channel_identities"] == 1
    [followed] = certificate["aliases"]  # the link was followed to what came before it
    assert followed["verification"]["passed"] and followed["stores"]["lake"][0]["rows_deleted"]
    links = client.get("/v1/identities", params={"user_id": subject}, headers=tenant.headers)
    assert links.json()["identities"] == []

    # Gone: from every file under the home, older table versions, Redis, the warehouse.
    assert files_with(Path(home), SECRET) == []
    for name, column in SUBJECT_COLUMNS.items():  # no readable version holds the subject
        who = subject if column == "user_id" else pseudonym(settings, tenant.tenant_id, subject)
        assert versions_holding(settings.lake_root, name, tenant.tenant_id, who) == [], name
    assert not r.exists(keys.conversation(late), keys.user_conversations(subject))
    # Everyone else, row for row: the same user id in the other tenant included.
    assert run_ingest(home, f"era-{uuid4().hex[:6]}").returncode == 0
    assert kept <= bronze_rows(settings)
    assert not {r for r in bronze_rows(settings)
                if r[1] == tenant.tenant_id and r[2] in (subject, alias)}  # fmt: skip
    assert {r for r in kept if r[1] == other_tenant.tenant_id and r[2] == subject}

    with psycopg.connect(endpoints.database_url) as owner:
        status, stored = owner.execute(
            "select status, certificate from erasure_requests where request_id = %s",
            (certificate["request_id"],),
        ).fetchone()
        actions = [a for (a,) in owner.execute(
            "select action from audit_log where target = %s order by audit_id",
            (certificate["request_id"],),
        )]  # fmt: skip
    assert status == "completed" and stored["subject_digest"] == certificate["subject_digest"]
    assert actions == ["compliance.erasure.requested", "compliance.erasure.completed"]
    assert json.loads(run("audit", "verify", "--tenant", tenant.tenant_id, home=home).stdout)["ok"]

    again = json.loads(run("erase", "--tenant", tenant.tenant_id, "--user", subject,
                           home=home).stdout)  # fmt: skip
    assert again["verification"]["passed"]
    assert all(t["rows_deleted"] == 0 for t in again["stores"]["lake"])


def test_the_api_accepts_an_erasure_and_reports_its_certificate(
    client, admin_headers, tenant, other_tenant, home, monkeypatch
):
    import time

    # a Dagster that does not answer: the erasure runs as a process of its own instead
    # (the Dagster path: tests/e2e/test_up.py)
    monkeypatch.setattr(client.app.state.platform.settings, "dagster_url", "http://127.0.0.1:9")
    converse(client, tenant, "to-forget", ["hello", "please forget me"])
    response = client.post(
        "/v1/compliance/erasure-requests", json={"user_id": "to-forget"}, headers=tenant.headers
    )
    assert response.status_code == 202, response.text
    assert response.json()["executor"] == "process"
    request_id = response.json()["request_id"]
    url = f"/v1/compliance/erasure-requests/{request_id}"
    assert client.get(url, headers=other_tenant.headers).status_code == 404
    deadline = time.monotonic() + 300
    body = client.get(url, headers=tenant.headers).json()
    while body["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(1)
        body = client.get(url, headers=tenant.headers).json()
    assert body["status"] == "completed", body
    assert body["certificate"]["verification"]["passed"]
    assert body["certificate"]["request_id"] == request_id
    assert "to-forget" not in json.dumps(body)


def test_messages_of_a_user_under_erasure_are_refused_and_nobody_elses(client, tenant, endpoints):
    from pipelines.compliance.erasure import erasing_key

    mark = erasing_key(tenant.tenant_id, "under-erasure")
    r = redis_lib.Redis.from_url(endpoints.redis_url)
    r.set(mark, "req", ex=60)
    try:
        refused = client.post("/v1/messages", json={"user_id": "under-erasure", "text": "hi"},
                              headers=tenant.headers)  # fmt: skip
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "erasure_in_progress"
        other = client.post("/v1/messages", json={"user_id": "someone-else", "text": "hi"},
                            headers=tenant.headers)  # fmt: skip
        assert other.status_code == 200
    finally:
        r.delete(mark)
    again = client.post("/v1/messages", json={"user_id": "under-erasure", "text": "hi"},
                        headers=tenant.headers)  # fmt: skip
    assert again.status_code == 200


def test_a_subject_export_holds_everything_from_every_store(
    client, admin_headers, settings, home, tmp_path
):
    import io
    import zipfile

    tenant = create_tenant(client, admin_headers, name="exporting")
    converse(client, tenant, "eva", ["hello", "where is my order?"])
    converse(client, tenant, "slack:U2147483697", ["from slack, before the link"])
    assert run_ingest(home, f"exp-{uuid4().hex[:6]}").returncode == 0
    open_conversation = converse(client, tenant, "eva", ["a newer question"])  # not ingested
    converse(client, tenant, "someone-else", ["hello"])
    link = {"user_id": "eva", "channel": "slack", "external_id": "U2147483697"}
    client.post("/v1/identities", json=link, headers=tenant.headers)

    out = tmp_path / "eva.zip"
    summary = json.loads(run("export", "--tenant", tenant.tenant_id, "--user", "eva",
                             "--out", str(out), home=home).stdout)  # fmt: skip
    assert summary["bytes"] == out.stat().st_size
    via_api = client.post("/v1/compliance/exports", json={"user_id": "eva"},
                          headers=tenant.headers)  # fmt: skip
    assert via_api.status_code == 200 and via_api.headers["content-type"] == "application/zip"
    for bundle in (out.read_bytes(), via_api.content):
        archive = zipfile.ZipFile(io.BytesIO(bundle))
        assert set(archive.namelist()) == {"subject.json", "messages.parquet",
                                           "conversation_events.parquet"}  # fmt: skip
        manifest = json.loads(archive.read("subject.json"))
        messages = pq.read_table(io.BytesIO(archive.read("messages.parquet")))
        # eva's own, and what she wrote on Slack before her id there was linked to her
        assert set(messages["user_id"].to_pylist()) == {"eva", "slack:U2147483697"}
        assert messages.num_rows == 6 and manifest["stores"]["lake"]["messages"] == 6
        redis_part = manifest["stores"]["redis"]
        ids = {c["conversation_id"] for c in redis_part["conversations"]}
        assert open_conversation in ids and len(ids) == 2
        pending = redis_part["events_not_yet_in_the_lake"]
        assert {e["text"] for e in pending if e.get("direction") == "in"} == {"a newer question"}
        assert all(e["user_id"] == "eva" for e in pending)
        [link] = manifest["stores"]["postgresql"]["channel_identities"]
        assert (link["channel"], link["external_id"]) == ("slack", "U2147483697")


# Killed at each step in turn (and the lake step right after its DELETE:
# tests/integration/test_lake_erasure.py), each run resuming what the one before left.
STEPS = ["marked", "redis_erased", "lake_erased", "warehouse_rebuilt", "verified"]


def test_an_erasure_killed_at_every_step_resumes_to_the_same_end(
    client, admin_headers, settings, home, endpoints
):
    from lake.erasure import FAILPOINT_ENV
    from lake.readers import scan
    from lake.schemas import MESSAGES_TABLE

    failpoint = "steps"
    tenant = create_tenant(client, admin_headers, name="resume")
    converse(client, tenant, "gone", ["hello", f"remember {SECRET}-{failpoint}"])
    converse(client, tenant, "stays", ["hello", "where is my order?"])
    assert run_ingest(home, f"res-{uuid4().hex[:6]}").returncode == 0
    assert run_pipeline(settings)["success"]
    held = scan(settings.lake_root, MESSAGES_TABLE, tenant.tenant_id).collect()
    held = held.filter(held["user_id"] == "gone").height
    request = uuid4().hex
    args = ("erase", "--tenant", tenant.tenant_id, "--user", "gone", "--request-id", request)
    for step in STEPS:
        killed = run_with_env(*args, home=home, env={FAILPOINT_ENV: step})
        assert killed.returncode == -9, (step, killed.stderr[-2000:])
        refused = client.post("/v1/messages", json={"user_id": "gone", "text": "hi"},
                              headers=tenant.headers)  # fmt: skip
        assert refused.status_code == 409, step  # marked until the certificate is stored
        with psycopg.connect(endpoints.database_url) as owner:
            (status,) = owner.execute(
                "select status from erasure_requests where request_id = %s", (request,)
            ).fetchone()
        assert status == "running", step

    certificate = json.loads(run(*args, home=home).stdout)
    assert certificate["verification"]["passed"], certificate["verification"]
    # the certificate covers every run of the request, not only the one that finished
    lake = {t["table"]: t for t in certificate["stores"]["lake"]}
    assert lake["bronze/messages"]["rows_deleted"] == held > 0
    assert lake["silver/turns"]["rows_deleted"] == held
    assert certificate["stores"]["redis"]["conversations"] == 1
    assert certificate["stores"]["warehouse"]["rows_deleted"]["fct_messages"] == held
    assert certificate["conversations"] == 1
    assert client.post("/v1/messages", json={"user_id": "gone", "text": "back"},
                       headers=tenant.headers).status_code == 200  # fmt: skip
    assert files_with(Path(home), f"{SECRET}-{failpoint}") == []
    kept = scan(settings.lake_root, MESSAGES_TABLE, tenant.tenant_id).collect()
    assert set(kept["user_id"]) == {"stays"}
    import duckdb

    with duckdb.connect(str(settings.warehouse), read_only=True) as warehouse:
        (messages_in,) = warehouse.execute(
            "select sum(messages_in) from fct_tenant_daily where tenant_id = ?",
            [tenant.tenant_id],
        ).fetchone()
    assert messages_in == kept.filter(direction="in").height  # the aggregates were rebuilt
    with psycopg.connect(endpoints.database_url) as owner:
        (status,) = owner.execute(
            "select status from erasure_requests where request_id = %s", (request,)
        ).fetchone()
    assert status == "completed"
