"""The conversation engine: what the bot answers."""
