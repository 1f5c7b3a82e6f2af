"""Conversation flows: the JSON Schema, the state-machine engine and the sample flow."""
