"""In-process fan-out to this instance's subscribers, with bounded queues: a slow
subscriber loses its oldest events instead of stalling the publisher or growing memory."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")


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


class HubStream(Generic[T]):
    """A subscription stream over a hub subscription, without generator frames: what

        async def stream():
            with open() as sub:
                async for item in sub:
                    yield convert(item)

    is, as a plain async iterator (the subscription is made at the first `__anext__`,
    not before; an error there, or `aclose`, ends the stream; `aclose` unsubscribes).
    Each generator between the hub's queue and a subscription's pump costs every
    event an `asend` round trip; `map` adds a conversion without adding one."""

    __slots__ = ("_convert", "_done", "_open", "_sub")

    def __init__(
        self, open: Callable[[], HubSubscription], convert: Callable[[Any], T] | None = None
    ) -> None:
        self._open = open
        self._convert = convert
        self._sub: HubSubscription | None = None
        self._done = False

    def map(self, convert: Callable[[T], U]) -> HubStream[U]:
        """This stream with each item passed through `convert` (use before iterating)."""
        inner = self._convert
        return HubStream(
            self._open, convert if inner is None else lambda item: convert(inner(item))
        )

    def __aiter__(self) -> HubStream[T]:
        return self

    async def __anext__(self) -> T:
        sub = self._sub
        if sub is None:
            if self._done:
                raise StopAsyncIteration
            try:
                sub = self._sub = self._open()
            except BaseException:
                self._done = True
                raise
        try:
            item = await sub.queue.get()
            return item if self._convert is None else self._convert(item)
        except BaseException:
            # As a generator would: an error (cancellation included) ends the stream.
            self._end()
            raise

    async def aclose(self) -> None:
        self._end()

    def close(self) -> None:
        """`aclose` without a coroutine: it waits for nothing."""
        self._end()

    def _end(self) -> None:
        self._done = True
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()
