"""The realtime path: the FastAPI app that end users and channels talk to.

A message is authenticated, rate-limited, answered (`engine/`) and appended to the event
log in Redis (`chatlake/events.py` is its contract); the ingest worker in `lake/` takes it
from there. Nothing here imports the lake, the pipelines, Delta, DuckDB, Polars or Dagster
(import-linter holds it): erasures and exports are recorded in PostgreSQL and launched as
jobs (`chatlake/jobs.py`), never run in the API process.
"""
