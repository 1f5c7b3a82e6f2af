"""Every job over the lake: the Dagster code location (`defs/`, one folder per domain),
the retraining of intent models (`nlu.py`), billing (`billing.py`), and the compliance jobs
(`compliance/`: erasure, export, retention) that both Dagster and the `chatlake` command
run. Imports the lake, NLU and the base; nothing imports it but the entry points."""
