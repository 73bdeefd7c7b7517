"""Subscriptions at scale: grouped execution (groups.py), per-socket send queues
(outbox.py), the protocol handlers (handlers.py) and what a subscription field
declares (schema/streams.py). README "Subscriptions at scale"."""

from cryptovault.schema.streams import StreamPolicy, private_stream, shared_stream
from cryptovault.subscriptions.outbox import CLOSE_TOO_SLOW

__all__ = ["CLOSE_TOO_SLOW", "StreamPolicy", "private_stream", "shared_stream"]
