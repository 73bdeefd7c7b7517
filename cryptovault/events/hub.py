"""In-process fan-out to this instance's subscribers, with bounded queues: a slow
subscriber loses its oldest events instead of stalling the publisher or growing memory."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any


class HubSubscription:
    def __init__(self, hub: Hub, topics: tuple[str, ...], maxsize: int) -> None:
        self._hub = hub
        self.topics = topics
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def put(self, item: Any) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self.queue.get()

    def close(self) -> None:
        self._hub._remove(self)

    def __enter__(self) -> HubSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub:
    def __init__(self) -> None:
        self._subs: dict[str, set[HubSubscription]] = defaultdict(set)

    def subscribe(self, *topics: str, maxsize: int = 256) -> HubSubscription:
        sub = HubSubscription(self, topics, maxsize)
        for topic in topics:
            self._subs[topic].add(sub)
        return sub

    def publish(self, topic: str, item: Any) -> int:
        subs = self._subs.get(topic)
        if not subs:
            return 0
        for sub in subs:
            sub.put(item)
        return len(subs)

    def subscriber_count(self, topic: str | None = None) -> int:
        if topic is not None:
            return len(self._subs.get(topic, ()))
        return len({s for subs in self._subs.values() for s in subs})

    def _remove(self, sub: HubSubscription) -> None:
        for topic in sub.topics:
            subs = self._subs.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[topic]
