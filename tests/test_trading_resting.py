# ruff: noqa: F811  (pytest injects the imported `world` fixture by parameter name)
"""The matcher skips the store on ticks of a symbol known to have no live order
(trading/resting.py), and never at the cost of a fill: an order placed while the
read that found none was running, an order placed on another instance, an order
event lost on the bus or a bus reconnect, each ends with the order filled."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import httpx
import pytest

from cryptovault.app import create_app
from cryptovault.documents.enums import OrderType
from cryptovault.events.bus import MemoryBus, ReconnectHandler
from cryptovault.events.hub import Hub
from cryptovault.security.origin import SYSTEM
from cryptovault.services import start_services
from cryptovault.trading.engine import TradingEngine, TradingStore, orders_topic
from cryptovault.trading.resting import RestingOrders
from tests.conftest import REDIS_URL, GraphQLClient, bearer, sign_up, tick
from tests.test_trading_faults import buy, clean, funded, order, set_price, world  # noqa: F401
from tests.trading_faults import Gated, World

RESTING_BUY = buy("1", OrderType.LIMIT, limit_price=Decimal("90.00"))


class ReconnectingBus(MemoryBus):
    """In-process delivery that can be told it reconnected (as RedisBus does after a
    lost connection: `on_reconnect` handlers run after it resubscribed)."""

    def __init__(self) -> None:
        super().__init__()
        self.reconnect_handlers: list[ReconnectHandler] = []

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        self.reconnect_handlers.append(handler)

    async def reconnected(self) -> None:
        for handler in self.reconnect_handlers:
            await handler()


class DownBus(MemoryBus):
    """A bus whose publishing fails (Redis unreachable)."""

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        raise ConnectionError("bus down")


class HeldAnswers:
    """The orders collection, except that while `armed` a `find_one` is answered by
    the store at once but its answer reaches the caller only when `release` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.armed = False
        self.answered = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        answer = await self.inner.find_one(*args, **kwargs)
        if self.armed:
            self.armed = False
            self.answered.set()
            await self.release.wait()
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def instance(world: World, bus: MemoryBus, orders: Any = None) -> TradingEngine:
    """One app instance's engine on the world's store (commands not gated)."""
    db = world.db
    store = TradingStore(
        orders=orders or db["orders"],
        trades=db["trades"],
        entries=db["ledger"],
        balances=db["balances"],
        adjustments=db["adjustments"],
        users=db["users"],
    )
    return TradingEngine(
        world.settings,
        world.market,
        bus,
        Hub(),
        world.audit,  # type: ignore[arg-type]
        None,
        liquidity=world.liquidity,
        store=store,
        clock=world.clock,
    )


async def reads_per_tick(world: World, engine: TradingEngine, price: str) -> int:
    """Store commands one tick's matching sends (the engine's orders gated)."""
    t = set_price(world, price)
    actor = await world.scheduler.start("match", engine.match_tick(t))
    await world.scheduler.finish(actor)
    return actor.sent


async def test_ticks_of_a_symbol_without_live_orders_read_nothing_until_an_order_event(
    world: World,
):
    bus = MemoryBus()
    matcher = instance(world, bus, orders=Gated(world.db["orders"], world.scheduler))
    assert await reads_per_tick(world, matcher, "100.00") == 2  # crossing orders, any order
    assert await reads_per_tick(world, matcher, "100.10") == 0
    assert await reads_per_tick(world, matcher, "100.20") == 0
    user = await funded(world)
    placed = await instance(world, bus).place(user, RESTING_BUY, SYSTEM)
    assert placed.status == "OPEN"
    # The order event was heard: the symbol's ticks read the store again, one read
    # each while the order rests and does not cross.
    assert await reads_per_tick(world, matcher, "100.30") == 2
    assert await reads_per_tick(world, matcher, "100.40") == 1
    await reads_per_tick(world, matcher, "89.00")
    assert (await order(world, placed.id))["status"] == "FILLED"
    await clean(world)


async def test_an_order_placed_while_the_read_finding_none_runs_is_matched_next_tick(
    world: World,
):
    """The read found no live order, but the answer arrives after an order was placed
    (and announced): that answer must not be kept, or the order would wait."""
    bus = MemoryBus()
    held = HeldAnswers(world.db["orders"])
    matcher = instance(world, bus, orders=held)
    user = await funded(world)
    held.armed = True
    matching = asyncio.create_task(matcher.match_tick(set_price(world, "100.00")))
    await asyncio.wait_for(held.answered.wait(), 60)  # the store answered: no live order
    placed = await instance(world, bus).place(user, RESTING_BUY, SYSTEM)
    assert placed.status == "OPEN"
    held.release.set()
    await matching
    await matcher.match_tick(set_price(world, "89.00"))
    assert (await order(world, placed.id))["status"] == "FILLED"
    await clean(world)


async def test_an_order_event_lost_on_the_bus_delays_a_fill_by_at_most_the_recheck(
    world: World,
):
    clock = Clock()
    matcher = instance(world, MemoryBus())
    matcher.resting = RestingOrders(recheck=5.0, clock=clock)
    await matcher.match_tick(set_price(world, "100.00"))  # learns: no live order
    user = await funded(world)
    # Placed on an instance whose order events never reach the matcher.
    placed = await instance(world, MemoryBus()).place(user, RESTING_BUY, SYSTEM)
    await matcher.match_tick(set_price(world, "89.00"))
    assert (await order(world, placed.id))["status"] == "OPEN"  # not heard of yet
    clock.now += 5.0
    await matcher.match_tick(set_price(world, "88.90"))
    assert (await order(world, placed.id))["status"] == "FILLED"
    await clean(world)


async def test_a_bus_reconnect_forgets_what_was_learned(world: World):
    bus = ReconnectingBus()
    matcher = instance(world, bus)
    await matcher.match_tick(set_price(world, "100.00"))  # learns: no live order
    user = await funded(world)
    # Placed while the matcher's bus connection was down: its event was lost.
    placed = await instance(world, MemoryBus()).place(user, RESTING_BUY, SYSTEM)
    await bus.reconnected()
    await matcher.match_tick(set_price(world, "89.00"))
    assert (await order(world, placed.id))["status"] == "FILLED"
    await clean(world)


async def test_an_order_placed_on_the_matching_instance_counts_even_if_the_bus_is_down(
    world: World,
):
    matcher = instance(world, DownBus())
    await matcher.match_tick(set_price(world, "100.00"))  # learns: no live order
    user = await funded(world)
    placed = await matcher.place(user, RESTING_BUY, SYSTEM)
    assert placed.status == "OPEN"
    await matcher.match_tick(set_price(world, "89.00"))
    assert (await order(world, placed.id))["status"] == "FILLED"
    await clean(world)


async def test_a_read_answer_overtaken_by_a_reconnect_is_not_kept():
    resting = RestingOrders(recheck=5.0, clock=Clock())
    mark = resting.mark("BTC")
    resting.forget()
    resting.learned("BTC", False, mark)
    assert not resting.none("BTC") and not resting.known("BTC")
    resting.learned("BTC", False, resting.mark("BTC"))
    assert resting.none("BTC")
    resting.changed("ETH")
    assert resting.none("BTC")
    resting.changed("BTC")
    assert not resting.none("BTC")


@pytest.mark.redis
async def test_an_order_placed_on_another_instance_is_matched_by_the_leader(settings):
    """Two instances on one store and Redis: the matching instance learned that LTC
    has no live order; an order placed through the other instance is filled by the
    next crossing tick, its event having crossed over Redis."""
    shared = replace(settings, redis_url=REDIS_URL)
    a = await start_services(shared, feed=None)
    b = await start_services(shared, feed=None)
    http: httpx.AsyncClient | None = None
    try:
        for s in (a, b):
            s.market.apply(tick("LTC", "80.00"))
        await a.trading.match_tick(tick("LTC", "80.00"))
        assert a.trading.resting.none("LTC")
        transport = httpx.ASGITransport(app=create_app(shared, services=b), client=("10.7.2.1", 1))
        http = httpx.AsyncClient(transport=transport, base_url="http://t")
        client = GraphQLClient(http)
        payload = await sign_up(client)
        client.headers.update(bearer(payload["accessToken"]))
        user_id = (await client.data("{ viewer { id } }"))["viewer"]["id"]
        with a.hub.subscribe(orders_topic(user_id)) as heard:
            placed = await client.data(
                "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }",
                {
                    "i": {
                        "symbol": "LTC",
                        "side": "BUY",
                        "type": "LIMIT",
                        "quantity": "1",
                        "limitPrice": "75.00",
                    }
                },
            )
            assert placed["placeOrder"]["status"] == "OPEN"
            await asyncio.wait_for(heard.queue.get(), 30)  # its event reached instance A
        crossing = tick("LTC", "74.00")
        for s in (a, b):
            s.market.apply(crossing)
        await a.trading.match_tick(crossing)
        got = await client.data(
            "query($id: ID!) { order(id: $id) { status } }", {"id": placed["placeOrder"]["id"]}
        )
        assert got["order"]["status"] == "FILLED"
    finally:
        if http is not None:
            await http.aclose()
        await a.close()
        await b.close()
