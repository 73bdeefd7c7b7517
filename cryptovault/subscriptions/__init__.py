"""Subscriptions at scale: grouped execution (groups.py), per-socket send queues
(outbox.py) and what a subscription field declares (schema/streams.py); the protocol
handlers that use them are the WebSocket transport (cryptovault/websocket.py).
README "Subscriptions at scale"."""

from cryptovault.schema.streams import StreamPolicy, private_stream, shared_stream
from cryptovault.subscriptions.outbox import CLOSE_TOO_SLOW

__all__ = ["CLOSE_TOO_SLOW", "StreamPolicy", "private_stream", "shared_stream"]
