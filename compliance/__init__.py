"""Compliance: erasure of a data subject everywhere the platform keeps data, subject export,
retention, PII detection and masking, and the audit trail that proves it."""
