"""Fixtures: one set of real embedded stores for the session, the app, tenants."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from chatlake.db.migrate import upgrade
from chatlake.embedded import Endpoints, Services
from chatlake.settings import Settings, get_settings
from tests.utils.factories import TenantHandle, create_tenant

# The longest files first (as measured by `--durations=0`): `make test` runs two workers
# (pytest-xdist, a file each at a time), and a long file started last would leave the
# other worker idle at the end.
LONGEST_FIRST = ["tests/e2e/test_up.py", "tests/e2e/test_erasure.py",
                 "tests/e2e/test_bench.py", "tests/integration/test_billing.py",
                 "tests/e2e/test_bench_chaos.py", "tests/e2e/test_retraining.py",
                 "tests/e2e/test_lakehouse.py", "tests/integration/test_pipeline_lock.py",
                 "tests/e2e/test_erasure_models.py",
                 "tests/integration/test_warehouse_relations.py",
                 "tests/e2e/test_clean_exit.py", "tests/integration/test_kafka_bus.py",
                 "tests/integration/test_retention.py", "tests/e2e/test_supervision.py",
                 "tests/integration/test_dashboards.py",
                 "tests/integration/test_lake_faults.py", "tests/e2e/test_cli.py",
                 "tests/api/test_fuzz.py", "tests/e2e/test_compliance_jobs.py",
                 "tests/e2e/test_up_kafka.py"]  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file stays


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("chatlake-home")
    previous = os.environ.get("CHATLAKE_HOME")
    os.environ["CHATLAKE_HOME"] = str(path)
    for name in ("CHATLAKE_DATABASE_URL", "CHATLAKE_REDIS_URL", "CHATLAKE_APP_DATABASE_URL"):
        os.environ.pop(name, None)
    os.environ["CHATLAKE_ACCESS_LOG"] = "false"
    get_settings.cache_clear()
    yield str(path)
    if previous is None:
        os.environ.pop("CHATLAKE_HOME", None)
    else:
        os.environ["CHATLAKE_HOME"] = previous
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def settings(home: str) -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    services = Services(settings)
    services.start()
    upgrade(services.endpoints().database_url)
    yield services
    services.stop()


@pytest.fixture(scope="session")
def endpoints(services: Services) -> Endpoints:
    return services.endpoints()


@pytest.fixture(scope="session")
def client(services: Services, settings: Settings) -> Iterator[TestClient]:
    from realtime.app import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def admin_headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.secret('admin_token')}"}


@pytest.fixture
def tenant(client: TestClient, admin_headers: dict[str, str]) -> TenantHandle:
    return create_tenant(client, admin_headers)


@pytest.fixture
def other_tenant(client: TestClient, admin_headers: dict[str, str]) -> TenantHandle:
    return create_tenant(client, admin_headers, name="other")


@pytest.fixture
def own_lake(services: Services, tmp_path, monkeypatch) -> Iterator[Settings]:
    """The session's servers with a lake and warehouse of this test's own, so that jobs
    over the whole lake (retention) leave the session's untouched."""
    monkeypatch.setenv("CHATLAKE_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("CHATLAKE_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
