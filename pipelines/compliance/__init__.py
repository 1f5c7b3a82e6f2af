"""Compliance jobs: erasure of a data subject everywhere the platform keeps data (with its
certificate), subject export, and retention. They run as `chatlake erase|export` processes
or Dagster runs, never in the API process, which only records the requests
(chatlake/jobs.py). PII masking and subject digests are in the base (chatlake/pii.py)."""
