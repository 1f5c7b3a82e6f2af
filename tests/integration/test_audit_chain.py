"""The audit log is a hash chain per tenant: `chatlake audit verify` finds edits and
removals, and concurrent writers still chain in commit order."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import psycopg

from chatlake.audit import verify
from tests.e2e.test_cli import run
from tests.utils.factories import create_tenant


def _owner(endpoints) -> psycopg.Connection:
    return psycopg.connect(endpoints.database_url, autocommit=True)


def _tamper(endpoints, sql: str, params: tuple) -> None:
    """What only a superuser could do: switch the append-only guard off, then edit."""
    with _owner(endpoints) as owner:
        owner.execute("alter table audit_log disable trigger audit_log_no_update")
        try:
            owner.execute(sql, params)
        finally:
            owner.execute("alter table audit_log enable trigger audit_log_no_update")


def test_an_untouched_chain_verifies(client, admin_headers, endpoints, home):
    tenant = create_tenant(client, admin_headers, name="audited")
    for name in ("a", "b", "c"):
        client.post("/v1/api-keys", json={"name": name}, headers=tenant.headers)
    report = json.loads(run("audit", "verify", "--tenant", tenant.tenant_id, home=home).stdout)
    assert report["ok"] and report["rows"] >= 4 and tenant.tenant_id in report["heads"]


def test_concurrent_writers_chain_in_commit_order(client, admin_headers, endpoints):
    tenant = create_tenant(client, admin_headers, name="audited-concurrently")

    def issue(i: int) -> int:
        body = {"name": f"k{i}"}
        return client.post("/v1/api-keys", json=body, headers=tenant.headers).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(issue, range(24))) == {201}
    with _owner(endpoints) as owner:
        assert verify(owner, tenant.tenant_id)["ok"]


def test_an_edited_row_fails_verification(client, admin_headers, endpoints, home):
    tenant = create_tenant(client, admin_headers, name="tampered")
    client.post("/v1/api-keys", json={"name": "x"}, headers=tenant.headers)
    first = "(select min(audit_id) from audit_log where tenant_id = %s)"
    _tamper(endpoints, f"update audit_log set actor = 'mallory' where audit_id = {first}",
            (tenant.tenant_id,))  # fmt: skip
    result = run("audit", "verify", "--tenant", tenant.tenant_id, home=home, check=False)
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert [p["problem"] for p in problems] == ["content does not match its hash (edited)"]


def test_a_removed_row_fails_verification(client, admin_headers, endpoints):
    tenant = create_tenant(client, admin_headers, name="pruned")
    for name in ("x", "y"):
        client.post("/v1/api-keys", json={"name": name}, headers=tenant.headers)
    _tamper(endpoints, "delete from audit_log where audit_id = (select min(audit_id) + 1 "
            "from audit_log where tenant_id = %s)", (tenant.tenant_id,))  # fmt: skip
    with _owner(endpoints) as owner:
        report = verify(owner, tenant.tenant_id)
    assert not report["ok"]
    assert "a row before it is missing" in report["problems"][0]["problem"]

    last = "delete from audit_log where audit_id = (select max(audit_id) from audit_log where tenant_id = %s)"  # noqa: E501
    _tamper(endpoints, last, (tenant.tenant_id,))
    with _owner(endpoints) as owner:
        problems = [p["problem"] for p in verify(owner, tenant.tenant_id)["problems"]]
    assert any("recorded head" in p for p in problems)
