"""Alembic environment: online migrations only, serialized by an advisory lock."""

from alembic import context
from sqlalchemy import create_engine, text

MIGRATION_LOCK = 7_424_312_001  # pg_advisory_lock key shared by every migrating process

url = context.config.attributes["url"]
engine = create_engine(url)
with engine.connect() as connection:
    connection.execute(text("select pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    connection.commit()
    try:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("select pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()
engine.dispose()
