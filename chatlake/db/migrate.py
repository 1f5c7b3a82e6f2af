"""Versioned, idempotent schema migrations (Alembic, raw SQL revisions).

`chatlake migrate` and `chatlake up` call `upgrade`; running it again is a no-op. Two
processes migrating at once serialize on a PostgreSQL advisory lock (see migrations/env.py).
A revision that creates a table of tenants' rows puts it under row-level security with
`tenant_rls` (migrations/rls.py).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlalchemy_url(url: str) -> str:
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sqlalchemy_url(url)
    return config


def upgrade(url: str) -> dict[str, str | None]:
    """Bring the schema to the newest revision; returns the revision before and after."""
    before = current_revision(url)
    command.upgrade(_config(url), "head")
    return {"from": before, "to": current_revision(url)}


def current_revision(url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config("postgresql://unused")).get_current_head()
