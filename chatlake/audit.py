"""Verifying the audit log's hash chains (see migration 0007).

Each tenant's rows form a chain: a row's `row_hash` is SHA-256 over its predecessor's hash
and its own canonical content. Editing a row changes its hash; deleting one breaks the
link after it; both are found here. Whoever can rewrite every later hash and the head as
well could hide an edit, which is why `heads` is printed: keeping those values outside the
database (a ticket, a notary, another system) anchors the chain.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

import psycopg
from psycopg.rows import dict_row


def verify(conn: psycopg.Connection[Any], tenant_id: str | None = None) -> dict[str, Any]:
    """Recompute every chain (or one tenant's); the report says where each one breaks."""
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute(
        """select audit_id, tenant_id::text as tenant_id, prev_hash, row_hash,
                  audit_log_canonical(a) as canonical
             from audit_log a
            where (%(t)s::uuid is null or tenant_id = %(t)s::uuid)
            order by tenant_id, audit_id""",
        {"t": tenant_id},
    ).fetchall()
    heads = {
        r["tenant_id"]: bytes(r["head"])
        for r in cur.execute(
            "select tenant_id::text as tenant_id, head from audit_heads "
            "where (%(t)s::uuid is null or tenant_id = %(t)s::uuid)",
            {"t": tenant_id},
        ).fetchall()
    }
    by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_tenant[row["tenant_id"]].append(row)
    problems: list[dict[str, Any]] = []
    for tenant, chain in by_tenant.items():
        problems += _verify_chain(tenant, chain, heads.get(tenant))
    return {
        "ok": not problems,
        "tenants": len(by_tenant),
        "rows": len(rows),
        "problems": problems,
        "heads": {tenant: head.hex() for tenant, head in sorted(heads.items())},
    }


def _problem(tenant: str, audit_id: int | None, problem: str) -> dict[str, Any]:
    return {"tenant_id": tenant, "audit_id": audit_id, "problem": problem}


def _verify_chain(
    tenant: str, rows: list[dict[str, Any]], head: bytes | None
) -> list[dict[str, Any]]:
    problems = []
    by_prev: dict[bytes, dict[str, Any]] = {}
    for row in rows:
        if row["row_hash"] is None:
            problems.append(_problem(tenant, row["audit_id"], "row without a hash"))
            continue
        prev = bytes(row["prev_hash"])
        if prev in by_prev:
            problems.append(
                _problem(tenant, row["audit_id"], "two rows claim the same predecessor")
            )
        by_prev[prev] = row
    link, seen = b"", 0
    while link in by_prev:
        row = by_prev.pop(link)
        expected = hashlib.sha256(link + row["canonical"].encode()).digest()
        if expected != bytes(row["row_hash"]):
            problems.append(
                _problem(tenant, row["audit_id"], "content does not match its hash (edited)")
            )
        link, seen = bytes(row["row_hash"]), seen + 1
    for row in by_prev.values():
        problems.append(
            _problem(
                tenant, row["audit_id"], "not reachable from the start (a row before it is missing)"
            )
        )
    if head is not None and link != head:
        problems.append(
            _problem(tenant, None, "the chain does not end at the recorded head (rows removed)")
        )
    return problems
