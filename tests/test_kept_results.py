"""A candle page is the same for every caller and changes only with its symbol's
market: its answer is kept and served again, without execution, until a tick or a
closed candle changes that market; the cost is charged every time."""

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
    mixed = """{ prices(symbols: ["SOL"]) { price }
      candles(symbol: "SOL", interval: ONE_HOUR, first: 1) { edges { cursor } } }"""
    for _ in range(2):
        await gql.data(mixed)
    assert len(executions) == 2
