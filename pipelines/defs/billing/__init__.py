"""Monthly invoices over the marts (pipelines/billing.py)."""
