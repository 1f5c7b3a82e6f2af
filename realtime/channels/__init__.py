"""Channels (issue 10): one module per channel, each parsing its webhooks into the
platform's message model, rendering replies into its format and sending them through its
API; `signatures.py` verifies every webhook before anything else reads it."""
