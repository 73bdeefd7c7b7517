"""What a subscription field declares about its stream, read by the grouped executor.

Every subscription field is private by default: subscribers are grouped only with
other subscriptions of the same credential (the same `Viewer`), so a field that
forgets to declare anything costs some performance, never privacy. A field whose
events and selection set are the same for every caller declares itself shared:

    @strawberry.subscription(
        description="...",
        metadata=shared_stream(coalesce_by=lambda price: price.symbol),
    )
    async def prices(self, info: Info, ...) -> AsyncGenerator[Price]: ...

`coalesce_by` (shared or private) names the events that supersede each other: when a
socket cannot keep up, only the newest event per key waits in its send queue (the
latest price per symbol) instead of a backlog of stale ones. Leave it out when every
event matters (order updates).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

METADATA_KEY = "cryptovault.stream"


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    # One group for every subscriber of the same document and variables, whoever
    # they are. The selection set then runs without a viewer (`info.context.viewer`
    # is None): fields that need one belong in a private stream.
    shared: bool = False
    # Event -> key: a newer event with the same key replaces an unsent older one.
    coalesce_by: Callable[[Any], Hashable] | None = None


PRIVATE = StreamPolicy()


def shared_stream(coalesce_by: Callable[[Any], Hashable] | None = None) -> dict[str, Any]:
    """`metadata` for a subscription whose events are the same for every caller."""
    return {METADATA_KEY: StreamPolicy(shared=True, coalesce_by=coalesce_by)}


def private_stream(coalesce_by: Callable[[Any], Hashable] | None = None) -> dict[str, Any]:
    """`metadata` for a per-viewer subscription (the default) that wants coalescing."""
    return {METADATA_KEY: StreamPolicy(shared=False, coalesce_by=coalesce_by)}


def policy_of(metadata: Mapping[str, Any] | None) -> StreamPolicy:
    policy = (metadata or {}).get(METADATA_KEY)
    return policy if isinstance(policy, StreamPolicy) else PRIVATE
