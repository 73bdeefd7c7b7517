"""Candle pages come from memory (closed candles never change) and answer exactly
what the store would: for every interval and cursor, across the cached and the cold
part of history, on the leader and on a follower that missed ticks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from bson import Decimal128

from cryptovault.documents.candles import CandleDocument
from cryptovault.events.bus import MemoryBus
from cryptovault.events.hub import Hub
from cryptovault.market.candle_cache import candle_to_message
from cryptovault.market.candles import Interval
from cryptovault.market.service import CANDLES_CHANNEL, MarketService
from tests.conftest import tick

# Stored history per interval: (how many, spacing in units of the interval). The
# one-minute candles are sparse and reach three days back: past the 2-day retention
# that the cache applies ahead of the store's pruning.
HISTORY = {
    Interval.ONE_MINUTE: (110, 40),
    Interval.FIVE_MINUTES: (130, 1),
    Interval.FIFTEEN_MINUTES: (90, 3),
    Interval.ONE_HOUR: (120, 1),
    Interval.ONE_DAY: (75, 1),
}
DEPTH = 40  # smaller than the history: pages cross into cold history


def stored_doc(symbol: str, interval: Interval, start: datetime, n: int) -> dict:
    price = Decimal(100 + n) + Decimal(n % 7) / 100
    return {
        "_id": f"{symbol}:{interval.value}:{int(start.timestamp())}",
        "symbol": symbol,
        "interval": interval.value,
        "start": start,
        "end": start + timedelta(seconds=interval.seconds),
        "open": Decimal128(price),
        "high": Decimal128(price + 1),
        "low": Decimal128(price - 1),
        "close": Decimal128(price + Decimal("0.5")),
        "volume": Decimal128(Decimal(n)),
        "ticks": n + 1,
    }


@pytest.fixture(scope="module")
async def history(services) -> str:
    symbol = "DOT"
    now = datetime.now(UTC)
    docs = []
    for interval, (count, spacing) in HISTORY.items():
        newest = interval.floor(now) - timedelta(seconds=interval.seconds * 3)
        step = timedelta(seconds=interval.seconds * spacing)
        docs += [stored_doc(symbol, interval, newest - i * step, i) for i in range(count)]
    await CandleDocument.get_pymongo_collection().insert_many(docs)
    return symbol


def pair(bus: MemoryBus | None = None) -> tuple[MarketService, MarketService]:
    """The same market with and without the cache."""
    bus = bus or MemoryBus()
    cached = MarketService(bus, Hub())
    assert cached.candle_cache is not None
    cached.candle_cache.depth = DEPTH
    return cached, MarketService(MemoryBus(), Hub(), cache_candles=False)


async def walk(market: MarketService, symbol: str, interval: Interval, first: int):
    """Every page from the newest, following the cursors."""
    pages, before = [], None
    while True:
        page, more = await market.candle_page(symbol, interval, first, before)
        pages.append((page, more))
        if not more:
            return pages
        before = page[-1].start


async def test_cached_pages_equal_stored_pages_for_every_interval_and_cursor(history):
    cached, stored = pair()
    now = datetime.now(UTC)
    for market in (cached, stored):
        market.apply(tick(history, "123.45", "2", at=now))  # an open candle first
    for interval in Interval:
        for first in (1, 7, 39, 41, 100, 500):
            got = await walk(cached, history, interval, first)
            assert got == await walk(stored, history, interval, first), (interval, first)
        newest = interval.floor(now)
        # Cursors anywhere, not only at candle starts (a client may keep an old one).
        for back in (0, 1, 2, 39, 40, 41, 57, 89, 200, 10_000):
            for offset in (timedelta(0), timedelta(seconds=1)):
                before = newest - back * timedelta(seconds=interval.seconds) + offset
                for first in (1, 10, 60):
                    assert await cached.candle_page(
                        history, interval, first, before
                    ) == await stored.candle_page(history, interval, first, before), (
                        interval,
                        back,
                        offset,
                        first,
                    )
    # Both parts were compared: pages from memory and pages reaching cold history.
    assert cached.candle_cache is not None and cached.candle_cache.cold_reads > 0


async def test_a_warm_candle_page_reads_nothing_from_the_store(gql, services, commands, history):
    query = """query($first: Int, $after: String) {
      candles(symbol: "DOT", interval: ONE_HOUR, first: $first, after: $after) {
        edges { cursor node { openTime close closed } } pageInfo { hasNextPage endCursor } } }"""
    services.market.candle_cache.drop()
    commands.only_this_task()
    commands.reset()
    first = await gql.data(query, {"first": 100})
    assert commands.commands == ["find"]  # the one-time fill
    for variables in (
        {"first": 100},
        {"first": 50, "after": first["candles"]["pageInfo"]["endCursor"]},
        {"first": 3, "after": first["candles"]["edges"][10]["cursor"]},
    ):
        commands.reset()
        await gql.data(query, variables)
        assert commands.commands == [], variables
    # From the candle cache itself, not only from a kept answer (tests/test_kept_results).
    page, _ = await services.market.candle_page("DOT", Interval.ONE_HOUR, 100, None)
    assert len(page) == 100 and commands.commands == []


async def test_a_follower_that_missed_ticks_serves_the_leaders_candles(services, commands):
    """Every instance fills its cache from what the leader stored and announced, not
    from the candles its own (incomplete) ticks closed."""
    bus = MemoryBus()
    leader, _ = pair(bus)
    follower, stored = pair(bus)
    leader.is_leader = True
    symbol = "LINK"
    minute = Interval.ONE_MINUTE.floor(datetime.now(UTC)) - timedelta(minutes=30)
    later = minute + timedelta(hours=1)

    async def minutes(first: int, last: int) -> None:
        for m in range(first, last):
            at = minute + timedelta(minutes=m)
            # The follower sees only the second tick of each minute; the leader both.
            leader.apply(tick(symbol, f"{20 + m}.000", "3", at=at + timedelta(seconds=1)))
            message = tick(symbol, f"{21 + m}.000", "1", at=at + timedelta(seconds=2))
            await bus.publish("market.ticks", message.to_message())
        await leader.flush()  # stores the closed candles, then announces them

    await minutes(0, 6)
    for market in (leader, follower):  # fill (the first announcement emptied them)
        for interval in Interval:
            await market.candle_page(symbol, interval, 20, later)
    await minutes(6, 12)
    for interval in (Interval.ONE_MINUTE, Interval.FIVE_MINUTES):
        commands.reset()
        on_leader = await leader.candle_page(symbol, interval, 20, later)
        on_follower = await follower.candle_page(symbol, interval, 20, later)
        assert commands.on("candles") == []  # both from memory
        assert on_follower == on_leader == await stored.candle_page(symbol, interval, 20, later)
    ones = (await follower.candle_page(symbol, Interval.ONE_MINUTE, 20, later))[0]
    assert len(ones) == 11
    # The leader's minutes (3 + 1 traded), not what the follower's ticks alone made.
    assert all(c.volume == 4 for c in ones)
    own = follower.candles.open_candle(symbol, Interval.ONE_MINUTE)
    assert own is not None and own.volume == 1


async def test_a_missed_announcement_makes_the_cache_refill_from_the_store(services, commands):
    bus = MemoryBus()
    follower, stored = pair(bus)
    symbol = "ETH"
    start = Interval.ONE_HOUR.floor(datetime.now(UTC)) - timedelta(days=30)
    await follower.candle_page(symbol, Interval.ONE_HOUR, 5, None)  # warm

    async def announce(seq: int, n: int, deliver: bool = True) -> None:
        at = start + timedelta(hours=n)
        await CandleDocument.get_pymongo_collection().insert_one(
            stored_doc(symbol, Interval.ONE_HOUR, at, n)
        )
        (candle,) = await stored._stored_candles(symbol, Interval.ONE_HOUR, at + timedelta(1), 1)
        message = {"publisher": "leader-1", "seq": seq, "candles": [candle_to_message(candle)]}
        if deliver:
            await bus.publish(CANDLES_CHANNEL, message)

    await announce(0, 0)
    await announce(1, 1, deliver=False)  # lost on the way (e.g. a Redis reconnect)
    await announce(2, 2)  # shows the gap
    commands.reset()
    got = await follower.candle_page(symbol, Interval.ONE_HOUR, 5, None)
    assert commands.on("candles") == ["find"]  # the refill
    assert got == await stored.candle_page(symbol, Interval.ONE_HOUR, 5, None)
    assert [c.start for c in got[0]] == [start + timedelta(hours=n) for n in (2, 1, 0)]


async def test_a_restarted_instance_fills_its_cache_from_the_store(history):
    first, stored = pair()
    before = await walk(first, history, Interval.ONE_HOUR, 100)
    restarted, _ = pair()  # an empty cache: the first page of each key reads the store
    assert await walk(restarted, history, Interval.ONE_HOUR, 100) == before
    assert before == await walk(stored, history, Interval.ONE_HOUR, 100)
    assert restarted.candle_cache is not None and restarted.candle_cache.fills == 1
