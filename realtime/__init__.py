"""The realtime path: the FastAPI app that end users and channels talk to.

Nothing here calls DuckDB, Dagster or the lake: a message is authenticated, rate-limited,
answered and appended to the event log in Redis, and the ingest worker takes it from there.
"""
