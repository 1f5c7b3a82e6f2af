"""The Delta lake: table schemas (one module), and, as they land, the idempotent writer,
the stream ingest worker, tenant-scoped readers and maintenance."""
