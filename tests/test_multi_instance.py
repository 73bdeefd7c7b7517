"""Several app instances on one store and one Redis: the feed runs on exactly one of
them (the lease holder) and every instance delivers every tick to its subscribers."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from decimal import Decimal

import pytest

from cryptovault.market.ticks import Tick
from cryptovault.services import start_services
from tests.conftest import REDIS_URL, make_settings

pytestmark = pytest.mark.redis


class CountingFeed:
    """A real feed (simulated prices) that also counts what it produced."""

    name = "counting"

    def __init__(self, instance: str, produced: Counter) -> None:
        from cryptovault.market.feeds.simulated import SimulatedFeed

        self.inner = SimulatedFeed(interval_ms=50, seed=7)
        self.instance = instance
        self.produced = produced

    async def run(self, emit) -> None:
        async def counted(tick: Tick) -> None:
            self.produced[self.instance] += 1
            await emit(tick)

        await self.inner.run(counted)


async def wait_for(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_two_instances_one_feed_every_tick_delivered_by_both(store_server):
    settings = make_settings(store_server.url, redis_url=REDIS_URL)
    produced: Counter = Counter()
    a = await start_services(settings, feed=CountingFeed("a", produced))
    b = await start_services(settings, feed=CountingFeed("b", produced))
    try:
        sub_a = a.hub.subscribe("price:BTC", maxsize=10_000)
        sub_b = b.hub.subscribe("price:BTC", maxsize=10_000)
        await wait_for(lambda: sub_a.queue.qsize() >= 20 and sub_b.queue.qsize() >= 20)
        # Exactly one instance runs the feed.
        assert len(produced) == 1
        leader = a if "a" in produced else b
        assert leader.market.is_leader and leader.leader.leading
        follower = b if leader is a else a
        assert not follower.leader.leading
        # Both instances saw the same ticks, each once and in order.
        seq_a = [sub_a.queue.get_nowait().tick.seq for _ in range(20)]
        seq_b = [sub_b.queue.get_nowait().tick.seq for _ in range(20)]
        assert seq_a == seq_b
        assert seq_a == sorted(set(seq_a))
    finally:
        await a.close()
        await b.close()


async def test_follower_takes_over_the_feed_when_the_leader_stops(store_server):
    settings = make_settings(store_server.url, redis_url=REDIS_URL)
    produced: Counter = Counter()
    a = await start_services(settings, feed=CountingFeed("a", produced))
    await wait_for(lambda: produced["a"] > 0)
    b = await start_services(settings, feed=CountingFeed("b", produced))
    for s in (a, b):
        s.leader.lease.ttl_ms = 1000  # type: ignore[attr-defined]
        s.leader.renew_every = 0.2
    try:
        await asyncio.sleep(0.5)
        assert produced["b"] == 0
        await a.close()  # releases the lease
        await wait_for(lambda: produced["b"] > 0, timeout=5)
        before = b.market.ticks_received
        await wait_for(lambda: b.market.ticks_received > before + 10)
    finally:
        await b.close()


async def test_a_crashed_leader_is_replaced_after_its_lease_expires(store_server):
    settings = make_settings(store_server.url, redis_url=REDIS_URL)
    produced: Counter = Counter()
    a = await start_services(settings, feed=CountingFeed("a", produced))
    await wait_for(lambda: produced["a"] > 0)
    b = await start_services(settings, feed=CountingFeed("b", produced))
    b.leader.renew_every = 0.2
    try:
        # Simulate a crash: the leader stops renewing without releasing.
        a.leader._loop_task.cancel()  # type: ignore[union-attr]
        await a.leader._stop_feed()
        await wait_for(lambda: produced["b"] > 0, timeout=10)
    finally:
        a.leader.lease.release = _noop  # type: ignore[method-assign]
        await a.close()
        await b.close()


async def _noop() -> None:
    return None


def test_tick_messages_round_trip_exactly():
    from datetime import UTC, datetime

    t = Tick(
        "BTC",
        Decimal("91000.01"),
        Decimal("91000.00"),
        Decimal("91000.02"),
        Decimal("0.00000001"),
        datetime.now(UTC),
        "simulated",
        5,
    )
    assert Tick.from_message(t.to_message()) == t
    assert replace(t, seq=6) != t
