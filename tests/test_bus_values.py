"""Typed bus channels: an in-process handler of the tick channel receives exactly what
a JSON round trip (what Redis carries) would give it, although `MemoryBus` hands a
plain tick over without that round trip."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis.asyncio as aioredis

from cryptovault.events.bus import Channel, MemoryBus, RedisBus
from cryptovault.market.assets import ASSETS
from cryptovault.market.service import TICKS, TICKS_CHANNEL
from cryptovault.market.ticks import Tick, quote
from tests.conftest import REDIS_URL

AT = datetime(2026, 12, 6, 0, 30, 15, 123456, tzinfo=UTC)
BASE = Tick(
    symbol="BTC",
    price=Decimal("50000.10"),
    bid=Decimal("49999.50"),
    ask=Decimal("50000.70"),
    volume=Decimal("1.00000000"),
    timestamp=AT,
    source="simulated",
    seq=7,
)


class Text(str):
    pass


class Amount(Decimal):
    pass


class Stamp(datetime):
    pass


def representative() -> list[Tick]:
    """What the feeds make, and values whose JSON round trip changes them."""
    feeds = [
        quote(asset, Decimal("123.456789"), Decimal("0.5"), "simulated", AT)
        for asset in ASSETS.values()
    ]
    return [
        *feeds,
        BASE,
        # Decimal exponents and trailing zeros
        replace(BASE, price=Decimal("100.00"), bid=Decimal("1E+3"), ask=Decimal("0.000")),
        replace(BASE, price=Decimal("-0"), bid=Decimal("1.10"), ask=Decimal("5E-8")),
        replace(BASE, volume=Decimal("123456789012345678901234567890.000000000001")),
        replace(BASE, price=Decimal("NaN"), bid=Decimal("Infinity"), ask=Decimal("-0E+2")),
        # timestamps: UTC (with and without microseconds), naive, other zones
        replace(BASE, timestamp=AT.replace(microsecond=0)),
        replace(BASE, timestamp=datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=UTC)),
        replace(BASE, timestamp=AT.replace(tzinfo=None)),
        replace(BASE, timestamp=AT.replace(tzinfo=timezone(timedelta(0)))),
        replace(BASE, timestamp=AT.replace(tzinfo=timezone(timedelta(hours=5, minutes=30)))),
        replace(BASE, timestamp=AT.replace(tzinfo=ZoneInfo("Europe/Paris"))),
        replace(BASE, timestamp=datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Paris"))),
        replace(BASE, timestamp=AT.replace(fold=1)),
        replace(BASE, timestamp=Stamp(2026, 12, 6, tzinfo=UTC)),
        # types the round trip turns into their base type
        replace(BASE, price=Amount("1.50")),
        replace(BASE, symbol=Text("BTC"), source=Text("feed")),
        replace(BASE, source="flux-été", symbol="ÉTH"),
        replace(BASE, seq=True),
        replace(BASE, seq=(1 << 64) - 1),
        replace(BASE, seq=-(1 << 63)),
    ]


def over_the_wire(tick: Tick) -> Tick:
    """What a handler gets through Redis: the message's JSON round trip, decoded."""
    return Tick.from_message(orjson.loads(orjson.dumps(tick.to_message())))


def assert_same(got: Tick, expected: Tick) -> None:
    """Equal field by field, of the same types, with the same digits and exponents,
    the same time zone and fold."""
    assert type(got) is Tick
    for f in fields(Tick):
        a, b = getattr(got, f.name), getattr(expected, f.name)
        assert type(a) is type(b), (f.name, a, b)
        assert repr(a) == repr(b), f.name
        if isinstance(a, Decimal):
            assert a.as_tuple() == b.as_tuple(), f.name
        if isinstance(a, datetime):
            assert (a.tzinfo, a.fold) == (b.tzinfo, b.fold), f.name
            assert type(a.tzinfo) is type(b.tzinfo), f.name


async def delivered(bus: Any, channel: Channel[Tick], ticks: list[Tick]) -> list[Tick]:
    received: list[Tick] = []

    async def handler(tick: Tick) -> None:
        received.append(tick)

    bus.subscribe_values(channel, handler)
    for tick in ticks:
        await bus.publish_value(channel, tick)
    return received


@pytest.mark.parametrize("tick", representative(), ids=repr)
async def test_a_tick_delivered_in_process_is_what_the_json_round_trip_gives(tick):
    (got,) = await delivered(MemoryBus(), TICKS, [tick])
    assert_same(got, over_the_wire(tick))


async def test_a_feed_tick_is_handed_over_as_is_and_another_makes_the_round_trip():
    plain = quote(ASSETS["ETH"], Decimal("3000.5"), Decimal("2"), "simulated")
    paris = replace(plain, timestamp=plain.timestamp.astimezone(ZoneInfo("Europe/Paris")))
    got = await delivered(MemoryBus(), TICKS, [plain, paris])
    assert got[0] is plain
    assert got[1] is not paris
    assert got[1].timestamp.tzinfo == timezone(timedelta(hours=1))


async def test_a_tick_json_cannot_carry_fails_the_publish_as_the_round_trip_does():
    too_big = replace(BASE, seq=1 << 64)
    with pytest.raises(TypeError):
        over_the_wire(too_big)
    with pytest.raises(TypeError):
        await delivered(MemoryBus(), TICKS, [too_big])


async def test_plain_and_typed_handlers_of_one_channel_each_get_their_form():
    """A handler of JSON objects on the tick channel gets the message as before, and a
    message published as JSON reaches the typed handlers decoded."""
    bus = MemoryBus()
    messages: list[dict[str, Any]] = []
    values: list[Tick] = []

    async def on_message(message: dict[str, Any]) -> None:
        messages.append(message)

    async def on_tick(tick: Tick) -> None:
        values.append(tick)

    bus.subscribe(TICKS_CHANNEL, on_message)
    bus.subscribe_values(TICKS, on_tick)
    paris = replace(BASE, timestamp=AT.replace(tzinfo=ZoneInfo("Europe/Paris")))
    for tick in (BASE, paris):
        await bus.publish_value(TICKS, tick)
    await bus.publish(TICKS_CHANNEL, paris.to_message())
    expected = [orjson.loads(orjson.dumps(t.to_message())) for t in (BASE, paris, paris)]
    assert messages == expected
    assert values[0] is BASE
    for got in values[1:]:
        assert_same(got, over_the_wire(paris))


async def test_one_channel_name_carries_one_type():
    other = Channel(TICKS_CHANNEL, Tick.to_message, Tick.from_message, Tick.survives_json)
    bus = MemoryBus()

    async def handler(tick: Tick) -> None:
        pass

    bus.subscribe_values(TICKS, handler)
    with pytest.raises(ValueError, match="another type"):
        bus.subscribe_values(other, handler)


@pytest.mark.redis
async def test_in_process_delivery_equals_delivery_through_redis():
    """The same ticks through RedisBus (the real wire) and MemoryBus."""
    ticks = representative()
    client = aioredis.Redis.from_url(REDIS_URL)
    bus = RedisBus(client, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    received: list[Tick] = []
    done = asyncio.Event()

    async def handler(tick: Tick) -> None:
        received.append(tick)
        if len(received) == len(ticks):
            done.set()

    bus.subscribe_values(TICKS, handler)
    await bus.start()
    try:
        for tick in ticks:
            await bus.publish_value(TICKS, tick)
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await bus.close()
        await client.aclose()
    in_memory = await delivered(MemoryBus(), TICKS, ticks)
    assert len(received) == len(in_memory) == len(ticks)
    for through_redis, in_process in zip(received, in_memory, strict=True):
        assert_same(in_process, through_redis)
