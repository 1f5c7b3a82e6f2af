"""The code location's definitions, loaded by `dg.load_from_defs_folder` (pipelines/
definitions.py): every module here is imported and its assets, checks, jobs, schedules and
sensors collected; `resources.py` binds the resources they share. One folder per domain:

- `lakehouse/`: bronze -> silver (`silver.py`), the dbt warehouse (`marts.py`), Great
  Expectations checks (`checks.py`), the `lakehouse` job, its sensor and the lake's
  maintenance (`automation.py`);
- `nlu/`: review queues and intent-model retraining, its schedule and sensor;
- `billing/`: monthly invoices and their schedules;
- `compliance/`: the `erase_subject` job that erasure requests launch, and retention.

The work itself is in plain functions below (`lake/`, `pipelines/nlu.py`,
`pipelines/billing.py`, `pipelines/compliance/`) that the `chatlake` command calls too.
"""
