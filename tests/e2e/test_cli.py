"""The `chatlake` console script, run as a user would, against the session's stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.factories import TenantHandle, send

CHATLAKE = str(Path(sys.executable).parent / "chatlake")


def run(
    *args: str, home: str, check: bool = True, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHATLAKE_HOME": home, **env_vars}
    # a guard against a hung command, not a measure: an erasure rebuilds the warehouse's
    # days with a pipeline run, which takes minutes on a loaded 2-core machine
    result = subprocess.run([CHATLAKE, *args], capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_services_status_is_json(services, home):
    status = json.loads(run("services", "status", home=home).stdout)
    assert status["postgres"]["running"] is True
    assert status["redis"]["running"] is True


def test_tenants_create_prints_a_working_key_and_sets_the_rate_limit(services, home, client):
    created = json.loads(run("tenants", "create", "cli-co", "--rate-limit", "2", home=home).stdout)
    assert set(created) >= {"tenant_id", "api_key"}
    tenant = TenantHandle(created["tenant_id"], created["api_key"], created["key_id"])
    assert [send(client, tenant).status_code for _ in range(3)] == [200, 200, 429]
    run("tenants", "update", tenant.tenant_id, "--rate-limit", "1000", home=home)
    listed = json.loads(run("tenants", "list", home=home).stdout)["tenants"]
    assert {"tenant_id": tenant.tenant_id, "rate_limit_per_minute": 1000}.items() <= next(
        t for t in listed if t["tenant_id"] == tenant.tenant_id
    ).items()


def test_keys_can_be_issued_listed_and_revoked(services, home, client, tenant):
    issued = json.loads(
        run("keys", "create", "--tenant", tenant.tenant_id, "--name", "ops", home=home).stdout
    )
    headers = {"Authorization": f"Bearer {issued['api_key']}"}
    assert client.get("/v1/tenant", headers=headers).status_code == 200
    keys = json.loads(run("keys", "list", "--tenant", tenant.tenant_id, home=home).stdout)[
        "api_keys"
    ]
    assert {k["name"] for k in keys} == {"default", "ops"}
    run("keys", "revoke", issued["key_id"], "--tenant", tenant.tenant_id, home=home)
    assert client.get("/v1/tenant", headers=headers).status_code == 401


def test_retention_is_set_and_enforced_from_the_cli(services, home, client, tmp_path):
    created = json.loads(
        run("tenants", "create", "keep-co", "--retention-days", "7", home=home).stdout
    )
    assert created["retention_days"] == 7
    tenant = TenantHandle(created["tenant_id"], created["api_key"], created["key_id"])
    run("tenants", "update", tenant.tenant_id, "--retention-days", "14", home=home)
    assert client.get("/v1/tenant", headers=tenant.headers).json()["retention_days"] == 14
    lake = {"CHATLAKE_LAKE_URI": str(tmp_path / "lake"),
            "CHATLAKE_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb")}  # fmt: skip
    report = json.loads(run("lake", "retention", "--today", "2026-11-26", home=home, **lake).stdout)
    assert report["tenants"][tenant.tenant_id] == {
        "retention_days": 14, "before": "2026-11-12", "lake_rows_deleted": 0
    }  # fmt: skip


def test_migrate_twice_is_a_no_op(services, home):
    first = json.loads(run("migrate", home=home).stdout)
    assert first["from"] == first["to"]


@pytest.mark.parametrize(
    "args",
    [
        ("tenants", "update", "not-a-uuid", "--rate-limit", "3"),
        ("tenants", "update", "00000000-0000-0000-0000-000000000000", "--rate-limit", "3"),
        ("tenants", "create", ""),
        ("tenants", "update", "00000000-0000-0000-0000-000000000000"),
        ("keys", "revoke", "nope", "--tenant", "00000000-0000-0000-0000-000000000000"),
        ("tenants", "create", "x", "--rate-limit", "zero"),
        ("tenants", "create", "x", "--retention-days", "0"),
        ("lake", "retention", "--today", "yesterday"),
        ("tenants", "create", "x", "--plan", "platinum"),
        (
            "users",
            "create",
            "--tenant",
            "00000000-0000-0000-0000-000000000000",
            "--email",
            "a@b.test",
        ),
        ("billing", "close", "--month", "2026-13"),
        (
            "billing",
            "invoices",
            "--tenant",
            "00000000-0000-0000-0000-000000000000",
            "--format",
            "pdf",
        ),
    ],
)
def test_user_mistakes_are_one_line_errors(services, home, args):
    result = run(*args, home=home, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


def test_users_and_invoices_from_the_cli(services, home, tenant):
    from datetime import UTC, datetime
    from uuid import uuid4

    email = f"Ana-{uuid4().hex[:6]}@Example.test"
    analyst = json.loads(
        run("users", "create", "--tenant", tenant.tenant_id, "--email", email, home=home).stdout
    )
    assert analyst["email"] == email.lower() and analyst["role"] == "analyst"
    assert len(analyst["password"]) >= 16 and "totp_uri" not in analyst
    admin = json.loads(run("users", "create", "--tenant", tenant.tenant_id, "--email",
                           f"boss-{uuid4().hex[:6]}@example.test", "--role", "admin",
                           home=home).stdout)  # fmt: skip
    assert admin["totp_uri"].startswith("otpauth://totp/chatlake:")
    again = run("users", "create", "--tenant", tenant.tenant_id, "--email", email, home=home,
                check=False)  # fmt: skip
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr
    this_month = datetime.now(UTC).strftime("%Y-%m")
    early = run("billing", "close", "--month", this_month, home=home, check=False)
    assert early.returncode == 1 and "not over yet" in early.stderr
    exported = run("billing", "invoices", "--tenant", tenant.tenant_id, "--format", "csv",
                   home=home)  # fmt: skip
    assert exported.stdout.startswith("invoice_id,tenant_id,month,status,currency,item")


def test_commands_say_how_to_start_the_stores_when_they_are_not_running(tmp_path):
    result = run("migrate", home=str(tmp_path), check=False)
    assert result.returncode == 1
    assert "chatlake services start" in result.stderr
    assert "Traceback" not in result.stderr
    retraining = run("pipeline", "run", home=str(tmp_path), check=False)
    assert retraining.returncode == 1 and "--no-retrain" in retraining.stderr
    assert "Traceback" not in retraining.stderr


def test_master_key_rotation_rewraps_stored_keys(services, home, client, tenant, endpoints):
    from uuid import uuid4

    import psycopg
    import pyotp

    from chatlake.keyspace import redis_sync_client
    from chatlake.secrets import SecretBox, secret_box
    from chatlake.settings import Settings
    from chatlake.users import create_user, sign_in
    from tests.utils.loopback import ScriptedServer, chat_completion

    provider = ScriptedServer()
    try:
        tier = {"provider": "openai", "model": "m", "base_url": provider.url,
                "api_key": "sk-rotate-1"}  # fmt: skip
        client.put("/v1/model-chain", json={"tiers": [tier]}, headers=tenant.headers)
        provider.script.append((200, chat_completion("before"), {}))
        assert send(client, tenant, "zxqv before rotation").json()["replies"][0]["text"] == "before"
        admin = create_user(endpoints.database_url, secret_box(Settings(home=home)),
                            tenant.tenant_id, f"rot-{uuid4().hex[:6]}@t.test", "admin")  # fmt: skip
        channel = {"secrets": {"app_secret": "meta-rotate-1", "access_token": "tok"}}
        assert client.put("/v1/channels/whatsapp", json=channel,
                          headers=tenant.headers).status_code == 200  # fmt: skip

        rotated = json.loads(run("secrets", "rotate", "--generate", home=home).stdout)
        assert rotated["rewrapped"] >= 4 and rotated["tenants"] >= 1
        # the dashboards admin's TOTP secret too: it opens under the new key alone
        new_key_only = SecretBox(json.loads(Path(home, "secrets.json").read_text())["master_key"])
        code = pyotp.parse_uri(admin["totp_uri"]).now()
        redis = redis_sync_client(endpoints.redis_url)
        signed = sign_in(endpoints.database_url, redis, new_key_only, admin["email"],
                         admin["password"], code)  # fmt: skip
        assert signed.role == "admin" and signed.tenant_id == tenant.tenant_id
        with psycopg.connect(endpoints.database_url) as owner:
            (tiers,) = owner.execute(
                "select tiers from model_chains where tenant_id = %s", (tenant.tenant_id,)
            ).fetchone()
        assert tiers[0]["sealed_api_key"].split(".")[1] == rotated["master_key_id"]
        assert "sk-rotate-1" not in json.dumps(tiers)
        with psycopg.connect(endpoints.database_url) as owner:
            (sealed,) = owner.execute(
                "select sealed_secrets from channel_configs where tenant_id = %s",
                (tenant.tenant_id,),
            ).fetchone()
        assert {t.split(".")[1] for t in sealed.values()} == {rotated["master_key_id"]}
        assert new_key_only.open(sealed["app_secret"], f"{tenant.tenant_id}:channel:whatsapp") \
            == "meta-rotate-1"  # fmt: skip

        # The API restarted with the new key (the old one kept as previous) opens it.
        store = client.app.state.platform.model_chain
        store.box = secret_box(Settings(home=home))
        store._cache.drop(tenant.tenant_id)
        provider.script.append((200, chat_completion("after"), {}))
        assert send(client, tenant, "zxqv after rotation").json()["replies"][0]["text"] == "after"
        assert provider.requests[-1]["headers"]["Authorization"] == "Bearer sk-rotate-1"

        again = json.loads(run("secrets", "rotate", home=home).stdout)
        assert again["rewrapped"] == 0 and again["current"] >= 1
    finally:
        provider.close()
    env_key = run_with_env("secrets", "rotate", "--generate", home=home,
                           env={"CHATLAKE_MASTER_KEY": "set-by-operator"})  # fmt: skip
    assert env_key.returncode != 0 and "CHATLAKE_MASTER_KEY_PREVIOUS" in env_key.stderr
    assert "Traceback" not in env_key.stderr


def run_with_env(*args: str, home: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CHATLAKE_HOME": home, **env}
    return subprocess.run([CHATLAKE, *args], capture_output=True, text=True, env=full, timeout=120)
