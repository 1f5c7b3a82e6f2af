"""The compliance jobs Dagster runs: erasure and retention (pipelines/compliance/)."""
