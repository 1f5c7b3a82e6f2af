"""The embedded-store supervisor, against the real servers."""

from __future__ import annotations

import psycopg
import redis

from chatlake.embedded import Services
from chatlake.settings import Settings


def test_status_reports_both_stores_running(services):
    status = services.status()
    for name in ("postgres", "redis"):
        assert status[name]["running"] is True
        assert status[name]["mode"] == "embedded"
        assert isinstance(status[name]["port"], int)


def test_start_is_idempotent_and_keeps_ports(services):
    before = services.status()
    services.start()
    after = services.status()
    assert after["postgres"]["pid"] == before["postgres"]["pid"]
    assert after["redis"]["port"] == before["redis"]["port"]


def test_stores_require_the_generated_passwords(endpoints):
    port = endpoints.database_url.rsplit(":", 1)[1].split("/")[0]
    try:
        psycopg.connect(f"postgresql://postgres:wrong@127.0.0.1:{port}/chatlake").close()
        raise AssertionError("PostgreSQL accepted a wrong password")
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
    client = redis.Redis.from_url(
        endpoints.redis_url.replace(endpoints.redis_url.split("@")[0], "redis://:wrong")
    )
    try:
        client.ping()
        raise AssertionError("Redis accepted a wrong password")
    except (redis.AuthenticationError, redis.ResponseError):
        pass


def test_redis_runs_with_aof_everysec(endpoints):
    client = redis.Redis.from_url(endpoints.redis_url)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}


def test_external_urls_start_nothing(tmp_path):
    settings = Settings(
        home=tmp_path,
        database_url="postgresql://u:p@db.example:5432/chatlake",
        redis_url="redis://cache.example:6379/0",
    )
    services = Services(settings)
    assert services.start() == {}
    endpoints = services.endpoints()
    assert endpoints.database_url == settings.database_url
    assert endpoints.redis_url == settings.redis_url
    assert not endpoints.embedded_postgres and not endpoints.embedded_redis
    assert not (tmp_path / "postgres").exists()
