"""The one settings object of the platform, read from `CHATLAKE_*` environment variables.

In development (the default) secrets that are not set are generated once and kept in
`$CHATLAKE_HOME/secrets.json`; in production a missing or default secret is refused.
"""

from __future__ import annotations

import json
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatlake.billing import DEFAULT_PLANS, Plan
from chatlake.errors import ConfigError

GENERATED_SECRETS = (
    "admin_token",
    "master_key",
    "postgres_password",
    "app_db_password",
    "redis_password",
    "pseudonym_key",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATLAKE_", extra="ignore")

    env: Literal["development", "production"] = "development"
    home: Path = Path(".chatlake")

    database_url: str | None = None
    app_database_url: str | None = None
    redis_url: str | None = None
    lake_uri: str | None = None
    event_bus: Literal["redis", "kafka"] = "redis"
    kafka_bootstrap: str | None = None
    # the events topic (created by `chatlake relay` if missing): partitions bound how many
    # ingest workers share the load; replication is the cluster's to give (1 on one broker)
    kafka_topic: str = "chatlake.events"
    kafka_partitions: int = Field(default=12, ge=1, le=10_000)
    kafka_replication: int = Field(default=1, ge=1, le=10)
    master_key: str | None = None
    # comma-separated former master keys, still accepted for opening during a rotation
    master_key_previous: str | None = None
    admin_token: str | None = None
    # keys the per-tenant HMAC that pseudonymizes user ids in silver and the warehouse
    pseudonym_key: str | None = None
    warehouse_path: Path | None = None
    # the Dagster webserver that erasure requests launch their job on (`up` sets it);
    # unset or unreachable: the API runs `chatlake erase` as a process of its own
    dagster_url: str | None = None
    # erasures and exports running at once, platform-wide (one per tenant at most)
    compliance_max_running: int = Field(default=2, ge=1, le=64)
    # erasures and exports queued or running (each a waiting process), per tenant and
    # platform-wide: a request beyond either is answered 429
    compliance_max_queued_per_tenant: int = Field(default=5, ge=1, le=1000)
    compliance_max_queued: int = Field(default=50, ge=1, le=10_000)

    open_signup: bool = False
    # may tenants point the URLs they configure (model-chain base_url, channel
    # api_base_url and openid_metadata_url, Teams serviceUrls) at http, private, loopback or
    # link-local addresses? unset: yes in development, no in production
    private_urls: bool | None = None
    # USD per million prompt and completion tokens, by model, e.g. {"gpt-4o-mini": [0.15, 0.6]}
    llm_prices: dict[str, tuple[float, float]] = Field(default_factory=dict)
    conversation_ttl_days: int = Field(default=90, ge=1, le=3650)
    # days of bronze and silver the lake keeps (the pipelines' retention schedule)
    lake_retention_days: int = Field(default=400, ge=1, le=36500)
    # the intent-retraining loop (pipelines/nlu.py): the review queue's window, the
    # confidence under which an utterance is reviewed, how many items a tenant sees
    nlu_review_days: int = Field(default=14, ge=1, le=3650)
    nlu_review_confidence: float = Field(default=0.6, ge=0.0, le=1.0)
    nlu_review_limit: int = Field(default=500, ge=1, le=100_000)
    # new labels (all tenants) that start a retraining run before the nightly one
    nlu_retrain_min_labels: int = Field(default=20, ge=1)
    # the promotion gate: the largest drop from the live model a candidate may show, per
    # metric, on the held-out split and on the regression set
    nlu_gate: dict[str, float] = Field(
        default_factory=lambda: {"accuracy": 0.02, "macro_f1": 0.02, "oos_recall": 0.05}
    )
    # billing (chatlake/billing.py): the plans tenants can be on, by name, and new tenants'
    billing_plans: dict[str, Plan] = Field(default_factory=lambda: dict(DEFAULT_PLANS))
    default_plan: str = "free"
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    default_rate_limit: int = Field(default=600, ge=1)
    db_pool_size: int = Field(default=4, ge=1)
    log_level: str = "INFO"
    access_log: bool = True

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _known_default_plan(self) -> Settings:
        if self.default_plan not in self.billing_plans:
            raise ValueError(
                f"CHATLAKE_DEFAULT_PLAN {self.default_plan!r} is not one of "
                f"CHATLAKE_BILLING_PLANS ({', '.join(sorted(self.billing_plans))})"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def lake_root(self) -> str:
        return self.lake_uri or str(self.home / "lake")

    @property
    def warehouse(self) -> Path:
        return self.warehouse_path or self.home / "warehouse.duckdb"

    @property
    def conversation_ttl_seconds(self) -> int:
        return self.conversation_ttl_days * 86400

    def secret(self, name: str) -> str:
        """A secret from the environment or, in development, from `$CHATLAKE_HOME/secrets.json`."""
        value = getattr(self, name, None)
        if value:
            if self.env == "production" and value in {"changethis", "change-me", "secret"}:
                raise ConfigError(f"CHATLAKE_{name.upper()} has a default value; set a real secret")
            return str(value)
        if self.env == "production" and name in ("admin_token", "master_key", "pseudonym_key"):
            raise ConfigError(f"CHATLAKE_{name.upper()} must be set when CHATLAKE_ENV=production")
        return _dev_secrets(self.home)[name]

    @property
    def allow_private_urls(self) -> bool:
        if self.private_urls is not None:
            return self.private_urls
        return self.env == "development"

    def previous_master_keys(self) -> list[str]:
        value = self.master_key_previous
        if value is None and self.env == "development" and not self.master_key:
            value = _dev_secrets(self.home).get("master_key_previous")
        return [key for key in (value or "").split(",") if key]


def rotate_dev_master_key(home: Path) -> None:
    """Development only: a new generated master key, the old one kept as previous."""
    stored = _dev_secrets(home)
    previous = [k for k in stored.get("master_key_previous", "").split(",") if k]
    stored["master_key_previous"] = ",".join([stored["master_key"], *previous])
    stored["master_key"] = secrets.token_urlsafe(24)
    _write_dev_secrets(home, stored)


def _write_dev_secrets(home: Path, stored: dict[str, str]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    path, tmp = home / "secrets.json", home / "secrets.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(stored, handle, indent=2)
    tmp.replace(path)


def _dev_secrets(home: Path) -> dict[str, str]:
    path = home / "secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in GENERATED_SECRETS if name not in stored]
    if missing:
        for name in missing:
            stored[name] = secrets.token_urlsafe(24)
        _write_dev_secrets(home, stored)
    return stored


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
