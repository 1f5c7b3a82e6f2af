"""The Dagster code location: lake ingest, silver, dbt marts, intent retraining, billing and
compliance jobs, each domain in its own folder under `pipelines/defs/`."""
