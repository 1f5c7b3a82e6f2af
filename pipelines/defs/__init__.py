"""One folder per domain (ingest, silver, analytics, intents, billing, compliance), each with
`assets.py`, `resources.py`, `schedules.py`, `sensors.py`, `checks.py` as it needs them."""
