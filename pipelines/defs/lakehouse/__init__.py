"""bronze -> silver -> the dbt warehouse, their checks, and the lake's upkeep."""
