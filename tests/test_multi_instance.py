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
    """A real feed (simulated prices) that also counts what it produced; with a
    `gate`, it produces nothing until the gate is set."""

    name = "counting"

    def __init__(self, instance: str, produced: Counter, gate: asyncio.Event | None = None) -> None:
        from cryptovault.market.feeds.simulated import SimulatedFeed

        self.inner = SimulatedFeed(interval_ms=50, seed=7)
        self.instance = instance
        self.produced = produced
        self.gate = gate

    async def run(self, emit) -> None:
        async def counted(tick: Tick) -> None:
            self.produced[self.instance] += 1
            await emit(tick)

        if self.gate is not None:
            await self.gate.wait()
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
    # Every instance reads the bus on its own: once ticks flow, one may have handed
    # tick n to its hub while the other has not read it yet, and subscribers made at
    # that moment see different first ticks. So the feed starts only once both
    # instances listen on the bus (start_services) and both hubs have a subscriber.
    gate = asyncio.Event()
    a = await start_services(settings, feed=CountingFeed("a", produced, gate))
    b = await start_services(settings, feed=CountingFeed("b", produced, gate))
    try:
        sub_a = a.hub.subscribe("price:BTC", maxsize=10_000)
        sub_b = b.hub.subscribe("price:BTC", maxsize=10_000)
        gate.set()
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
    b.leader.renew_every = 0.2
    # a keeps its lease's TTL: a short one could expire while a loaded machine
    # delays a's renewal, and b would then take over before a stops.
    tries: list[bool] = []
    acquire_or_renew = b.leader.lease.acquire_or_renew

    async def counted() -> bool:
        tries.append(await acquire_or_renew())
        return tries[-1]

    b.leader.lease.acquire_or_renew = counted  # type: ignore[method-assign]
    try:
        await wait_for(lambda: len(tries) >= 1)
        assert True not in tries  # while a leads, b does not take the lease...
        assert not b.leader.leading and produced["b"] == 0  # ...nor start its feed
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
