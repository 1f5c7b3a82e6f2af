import json

import pytest

from chatlake.errors import ConfigError
from chatlake.settings import Settings


def test_development_generates_secrets_once(tmp_path):
    settings = Settings(home=tmp_path)
    token = settings.secret("admin_token")
    assert len(token) >= 24
    assert Settings(home=tmp_path).secret("admin_token") == token
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0
    assert json.loads((tmp_path / "secrets.json").read_text())["admin_token"] == token


def test_production_refuses_missing_or_default_secrets(tmp_path):
    with pytest.raises(ConfigError, match="CHATLAKE_ADMIN_TOKEN"):
        Settings(home=tmp_path, env="production").secret("admin_token")
    with pytest.raises(ConfigError, match="default value"):
        Settings(home=tmp_path, env="production", master_key="changethis").secret("master_key")
    real = Settings(home=tmp_path, env="production", admin_token="s3cr3t-from-vault")
    assert real.secret("admin_token") == "s3cr3t-from-vault"


def test_environment_variables_configure_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATLAKE_HOME", str(tmp_path))
    monkeypatch.setenv("CHATLAKE_CONVERSATION_TTL_DAYS", "7")
    monkeypatch.setenv("CHATLAKE_MAX_BODY_BYTES", "2048")
    settings = Settings()
    assert settings.home == tmp_path.resolve()
    assert settings.conversation_ttl_seconds == 7 * 86400
    assert settings.max_body_bytes == 2048
    assert settings.warehouse == tmp_path.resolve() / "warehouse.duckdb"
