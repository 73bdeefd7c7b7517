"""A candle page, and the latest prices, are the same for every caller and change only
with the market: their answer is kept and served again, without execution, until a
tick or a closed candle changes that market (or, for prices, the 24 h statistics'
window moves on with the clock); the cost is charged every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import tick

PAGE = """query($first: Int, $symbol: String! = "SOL") {
  candles(symbol: $symbol, interval: ONE_MINUTE, first: $first) {
    edges { cursor node { openTime close closed } } pageInfo { hasNextPage endCursor } } }"""


@pytest.fixture
def executions(services, monkeypatch) -> list[str]:
    """The candle pages actually computed."""
    calls: list[str] = []
    market = services.market
    real = market.candle_page

    async def counting(symbol, *args):
        calls.append(symbol)
        return await real(symbol, *args)

    monkeypatch.setattr(market, "candle_page", counting)
    return calls


async def closed_minutes(services, symbol: str, prices: list[str]) -> None:
    market = services.market
    leader = market.is_leader
    market.is_leader = True
    try:
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=20)
        for m, price in enumerate(prices):
            market.apply(tick(symbol, price, at=start + timedelta(minutes=m, seconds=1)))
        await market.flush()
    finally:
        market.is_leader = leader


async def test_a_page_is_kept_until_its_symbol_ticks(gql, services, executions):
    await closed_minutes(services, "SOL", ["150.00", "151.00", "152.00"])
    first = await gql.execute(PAGE, {"first": 10})
    again = await gql.execute(PAGE, {"first": 10})
    assert executions == ["SOL"]
    assert again["data"] == first["data"]
    # The cost is charged on every request, kept answer or not.
    charged, recharged = first["extensions"]["cost"], again["extensions"]["cost"]
    for figure in ("requestedQueryCost", "actualQueryCost"):
        assert recharged[figure] == charged[figure]
    spent = charged["requestedQueryCost"]
    left = charged["throttleStatus"]["currentlyAvailable"]
    assert recharged["throttleStatus"]["currentlyAvailable"] == left - spent

    other_variables = await gql.execute(PAGE, {"first": 2})
    assert executions == ["SOL", "SOL"] and len(other_variables["data"]["candles"]["edges"]) == 2

    services.market.apply(tick("BTC", "100.00"))  # another symbol: still kept
    await gql.execute(PAGE, {"first": 10})
    assert len(executions) == 2

    services.market.apply(tick("SOL", "160.00"))  # the open candle moved
    moved = await gql.execute(PAGE, {"first": 10})
    assert len(executions) == 3
    assert moved["data"]["candles"]["edges"][0]["node"]["close"] == "160.00"


async def test_closed_candles_arriving_renew_the_page(gql, services, executions):
    # A symbol no earlier test moved (ticks older than the last one are ignored).
    await closed_minutes(services, "XRP", ["1.5000", "1.5100"])
    before = await gql.data(PAGE, {"first": 500, "symbol": "XRP"})
    await closed_minutes(services, "XRP", ["1.5000", "1.5100", "1.5200", "1.5300"])
    after = await gql.data(PAGE, {"first": 500, "symbol": "XRP"})
    assert len(executions) == 2
    assert len(after["candles"]["edges"]) > len(before["candles"]["edges"])


async def test_only_operations_made_of_shared_fields_are_kept(gql, services, executions):
    mixed = """{ assets { symbol }
      candles(symbol: "SOL", interval: ONE_HOUR, first: 1) { edges { cursor } } }"""
    for _ in range(2):
        await gql.data(mixed)
    assert len(executions) == 2


PRICES = """query($s: [String!]) {
  prices(symbols: $s) { symbol price high24h low24h volume24h change24h } }"""


@pytest.fixture
def quotes_read(services, monkeypatch) -> list[list[str]]:
    """The quotes actually read (one entry per execution of `prices`)."""
    calls: list[list[str]] = []
    market = services.market
    real = market.quotes

    def counting(assets, *args):
        calls.append([a.symbol for a in assets])
        return real(assets, *args)

    monkeypatch.setattr(market, "quotes", counting)
    return calls


async def test_prices_are_kept_until_a_listed_symbol_ticks(gql, services, quotes_read, monkeypatch):
    market = services.market
    # The window's minute must not turn mid-test (that alone renews the answer).
    frozen = datetime.now(UTC).replace(second=30, microsecond=0)
    monkeypatch.setattr(market, "clock", lambda: frozen)
    market.apply(tick("DOGE", "0.20000"))
    market.apply(tick("LTC", "80.00"))
    first = await gql.execute(PRICES, {"s": ["DOGE", "LTC"]})
    again = await gql.execute(PRICES, {"s": ["DOGE", "LTC"]})
    assert quotes_read == [["DOGE", "LTC"]]
    assert again["data"] == first["data"]
    charged, recharged = first["extensions"]["cost"], again["extensions"]["cost"]
    assert recharged["requestedQueryCost"] == charged["requestedQueryCost"] > 0
    assert recharged["actualQueryCost"] == charged["actualQueryCost"]
    left = charged["throttleStatus"]["currentlyAvailable"]
    spent = charged["requestedQueryCost"]
    assert recharged["throttleStatus"]["currentlyAvailable"] == left - spent

    market.apply(tick("ADA", "0.5000"))  # not listed: still kept
    await gql.execute(PRICES, {"s": ["DOGE", "LTC"]})
    assert len(quotes_read) == 1

    market.apply(tick("LTC", "81.50"))  # a listed symbol ticked: the new price at once
    moved = await gql.data(PRICES, {"s": ["DOGE", "LTC"]})
    assert len(quotes_read) == 2
    assert [p["price"] for p in moved["prices"]] == ["0.20000", "81.50"]
    # Every asset (no `symbols`): an answer of its own, renewed by any symbol's tick.
    everything = await gql.data("{ prices { symbol price } }")
    await gql.data("{ prices { symbol price } }")
    assert len(quotes_read) == 3
    assert {"symbol": "ADA", "price": "0.5000"} in everything["prices"]
    market.apply(tick("ADA", "0.5100"))
    renewed = await gql.data("{ prices { symbol price } }")
    assert len(quotes_read) == 4
    assert {"symbol": "ADA", "price": "0.5100"} in renewed["prices"]


async def test_prices_follow_the_24h_window_as_it_slides(gql, services, quotes_read, monkeypatch):
    """No tick at all: the clock alone moves the window past the oldest minute, and
    the next answer has the statistics without it."""
    market = services.market
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    for m, price in enumerate(["20.000", "10.000", "11.000", "12.000"]):
        market.apply(tick("LINK", price, "1", at=start + timedelta(minutes=m, seconds=1)))
    # Closed: 20, 10, 11 (a minute each); open: 12.
    # The window holds the minutes that started at most 24 h ago: the 20 one, for now.
    clock = {"now": start + timedelta(hours=24) - timedelta(seconds=30)}
    monkeypatch.setattr(market, "clock", lambda: clock["now"])
    variables = {"s": ["LINK"]}

    async def link() -> dict[str, str]:
        return (await gql.data(PRICES, variables))["prices"][0]

    assert (await link())["high24h"] == "20.000"
    clock["now"] += timedelta(seconds=30)  # it started exactly 24 h ago: kept
    assert (await link())["high24h"] == "20.000"
    assert len(quotes_read) == 1

    clock["now"] += timedelta(microseconds=1)  # now it started over 24 h ago
    slid = await link()
    assert len(quotes_read) == 2
    assert (slid["high24h"], slid["low24h"], slid["volume24h"]) == ("12.000", "10.000", "3.0000")
    assert slid["change24h"] == "2.000"  # from the 10 minute's open

    clock["now"] += timedelta(minutes=1)  # and the 10 minute too
    slid = await link()
    assert (slid["high24h"], slid["low24h"], slid["change24h"]) == ("12.000", "11.000", "1.000")
    assert len(quotes_read) == 3


def test_the_stats_version_changes_exactly_when_the_24h_window_moves_on():
    """RollingStats.version remembers the window's start with the span of clock
    values it holds for: across minute boundaries, exact minutes, clocks going back
    (a test's clock, a corrected system clock) it answers what window_start does."""
    import random
    from datetime import UTC, datetime, timedelta

    from cryptovault.market.stats import RollingStats, window_start

    stats = RollingStats()
    rng = random.Random(16)
    now = datetime(2026, 12, 6, 3, 59, 58, tzinfo=UTC)
    steps = [timedelta(microseconds=1), timedelta(seconds=1), timedelta(0), timedelta(minutes=1)]
    steps += [timedelta(seconds=-30), timedelta(hours=-2)]
    for _ in range(20_000):
        now += rng.choice([*steps, timedelta(microseconds=rng.randrange(120_000_000))])
        if rng.random() < 0.05:
            now = now.replace(second=0, microsecond=0)  # exactly on a minute
        assert stats.version(now)[1] == window_start(now), now
