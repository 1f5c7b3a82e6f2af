"""The conversation engine: what the bot answers. `turn.py` takes one message through it
(understood, answered, recorded, responded to); the API's routes and the channels call it,
and it imports neither (nor anything of HTTP)."""
