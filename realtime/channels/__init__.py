"""Channels (issue 10): one module per channel, each parsing its webhooks into the
platform's message model (`model.py`), rendering the engine's replies
(realtime/engine/replies.py) into its format and sending them through its API;
`signatures.py` verifies every webhook before anything else reads it, `dispatch.py` takes
a webhook's messages through the engine's turn, and `delivery.py` sends the replies.
The channels build on the engine; the engine imports nothing of theirs."""
