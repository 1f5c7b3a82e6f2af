"""The Delta lake: every table's name and schema (lake/schemas.py, bronze from the event
contract in chatlake/events.py), the idempotent writer, the stream ingest worker, silver,
tenant-scoped readers, erasure and maintenance."""
