"""chatlake: the base every other part of the platform stands on, and nothing more.

Settings, the keyspace of Redis, PostgreSQL (connections, the schema and its migrations,
the control-plane stores: tenants, API keys, users, billing plans), secrets, the audit
chain, PII masking and subject digests, per-subject keys, the event contract the API
appends and the lake reads (`events.py`, `streams.py`), compliance job records
(`jobs.py`), warehouse access (`warehouse.py`) and the embedded stores. It imports no
other package of this repository: the layers above are `nlu/`, then `realtime/` and
`lake/` side by side, then `pipelines/` and `dashboards/`, then `bench/` and the entry
points in `cli/` (pyproject.toml `[tool.importlinter]` holds the order).
"""

__version__ = "0.1.0"
