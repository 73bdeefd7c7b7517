"""HubStream (events/hub.py) behaves as the async generator it replaces:

    with open() as sub:
        async for item in sub:
            yield convert(item)

the hub is subscribed at the first read, not before; an error there, in `convert` or
a cancellation ends the stream and unsubscribes; `aclose` (or `close`) unsubscribes."""

from __future__ import annotations

import asyncio

import pytest

from cryptovault.events.hub import Hub, HubStream
from cryptovault.subscriptions.groups import _close_unstarted


def stream(hub: Hub, topic: str = "t") -> HubStream[int]:
    return HubStream(lambda: hub.subscribe(topic, maxsize=4))


async def ended_and_unsubscribed(hub: Hub, numbers: HubStream) -> None:
    assert hub.subscriber_count("t") == 0
    with pytest.raises(StopAsyncIteration):
        await anext(numbers)


async def test_subscribes_at_the_first_read_and_maps_each_item():
    hub = Hub()
    numbers = stream(hub).map(lambda n: n * 10).map(str)
    assert hub.subscriber_count("t") == 0
    reading = asyncio.ensure_future(anext(numbers))
    await asyncio.sleep(0)
    assert hub.subscriber_count("t") == 1
    hub.publish("t", 4)
    assert await reading == "40"
    hub.publish("t", 5)
    assert await anext(numbers) == "50"
    await numbers.aclose()
    await ended_and_unsubscribed(hub, numbers)


async def test_an_error_opening_ends_the_stream():
    calls = 0

    def refuse():
        nonlocal calls
        calls += 1
        raise ValueError("unknown symbol")

    refused: HubStream[int] = HubStream(refuse)
    with pytest.raises(ValueError, match="unknown symbol"):
        await anext(refused)
    with pytest.raises(StopAsyncIteration):
        await anext(refused)
    assert calls == 1


async def test_an_error_converting_ends_the_stream_and_unsubscribes():
    hub = Hub()

    def convert(n: int) -> int:
        if n < 0:
            raise ValueError("negative")
        return n

    numbers = stream(hub).map(convert)
    reading = asyncio.ensure_future(anext(numbers))
    await asyncio.sleep(0)
    hub.publish("t", -1)
    with pytest.raises(ValueError, match="negative"):
        await reading
    await ended_and_unsubscribed(hub, numbers)


async def test_a_cancelled_read_ends_the_stream_and_unsubscribes():
    hub = Hub()
    numbers = stream(hub)
    reading = asyncio.ensure_future(anext(numbers))
    await asyncio.sleep(0)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    await ended_and_unsubscribed(hub, numbers)


async def test_closing_an_unread_stream_never_subscribes():
    hub = Hub()
    numbers = stream(hub)
    await numbers.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(numbers)
    assert hub.subscriber_count() == 0


async def test_close_ends_the_stream_at_once_as_aclose_does():
    hub = Hub()
    unread = stream(hub)
    unread.close()  # never read: nothing was subscribed, nothing will be
    await ended_and_unsubscribed(hub, unread)
    numbers = stream(hub)
    reading = asyncio.ensure_future(anext(numbers))
    await asyncio.sleep(0)
    hub.publish("t", 1)
    assert await reading == 1
    numbers.close()
    await ended_and_unsubscribed(hub, numbers)


async def test_a_joining_subscribers_unused_stream_is_closed_without_a_task():
    hub = Hub()
    unused = stream(hub)
    tasks = asyncio.all_tasks()
    _close_unstarted(unused)
    assert asyncio.all_tasks() == tasks
    await ended_and_unsubscribed(hub, unused)
