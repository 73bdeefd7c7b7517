"""Market data over GraphQL: assets, prices, candles and their input errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import error_codes, tick

PRICES = "query($s: [String!]) { prices(symbols: $s) { symbol price bid ask change24h changePercent24h high24h low24h volume24h timestamp } }"


async def test_assets_lists_the_catalogue_with_increments(gql):
    data = await gql.data("{ assets { symbol name precision quantityIncrement priceIncrement } }")
    symbols = [a["symbol"] for a in data["assets"]]
    assert len(symbols) >= 10
    assert {"BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "AVAX", "LINK", "LTC"} <= set(symbols)
    btc = next(a for a in data["assets"] if a["symbol"] == "BTC")
    assert btc == {
        "symbol": "BTC",
        "name": "Bitcoin",
        "precision": 8,
        "quantityIncrement": "0.00000001",
        "priceIncrement": "0.01",
    }


async def test_prices_are_decimal_strings_with_24h_stats(gql, services):
    now = datetime.now(UTC)
    for price, vol in (("100.00", "2"), ("120.50", "1.5"), ("90.25", "0.5")):
        services.market.apply(tick("LTC", price, vol, at=now))
    data = await gql.data(PRICES, {"s": ["ltc"]})
    (p,) = data["prices"]
    assert p["symbol"] == "LTC"
    assert p["price"] == "90.25"
    assert isinstance(p["bid"], str) and isinstance(p["ask"], str)
    assert p["bid"] < p["price"] < p["ask"] or float(p["bid"]) < 90.25 < float(p["ask"])
    assert p["high24h"] == "120.50"
    assert p["low24h"] == "90.25"
    assert p["volume24h"] == "4.0000"
    assert p["change24h"] == "-9.75"
    assert p["changePercent24h"] == "-9.75"


async def test_rolling_stats_span_closed_minutes(services, gql):
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0)
    services.market.apply(tick("DOT", "2.000", "10", at=minute - timedelta(minutes=3)))
    services.market.apply(tick("DOT", "2.500", "10", at=minute - timedelta(minutes=2)))
    services.market.apply(tick("DOT", "2.200", "5", at=minute - timedelta(minutes=1)))
    services.market.apply(tick("DOT", "2.100", "1", at=now))
    (p,) = (await gql.data(PRICES, {"s": ["DOT"]}))["prices"]
    assert p["high24h"] == "2.500"
    assert p["low24h"] == "2.000"
    assert p["volume24h"] == "26.0000"
    assert p["change24h"] == "0.100"
    assert p["changePercent24h"] == "5.00"


async def test_unknown_symbol_and_empty_list_are_bad_user_input(gql):
    body = await gql.execute(PRICES, {"s": ["BTC", "NOPE"]})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "NOPE" in body["errors"][0]["message"]
    body = await gql.execute(PRICES, {"s": []})
    assert error_codes(body) == ["BAD_USER_INPUT"]
    body = await gql.execute('{ asset(symbol: "NOPE") { name } }')
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_bad_interval_is_bad_user_input(gql):
    body = await gql.execute('{ candles(symbol: "BTC", interval: TWO_MINUTES) { edges { cursor } } }')
    assert error_codes(body) == ["BAD_USER_INPUT"]
    body = await gql.execute(
        "query($i: CandleInterval!) { candles(symbol: \"BTC\", interval: $i) { edges { cursor } } }",
        {"i": "1m"},
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_syntax_errors_are_bad_user_input_without_internals(gql):
    body = await gql.execute("{ prices { symbol ")
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "Traceback" not in str(body)


CANDLES = """query($first: Int, $after: String) {
  candles(symbol: "AVAX", interval: ONE_MINUTE, first: $first, after: $after) {
    edges { cursor node { openTime closeTime open high low close volume closed } }
    pageInfo { hasNextPage endCursor }
  }
}"""


async def test_candles_page_newest_first_across_memory_and_store(services, gql):
    market = services.market
    market.is_leader = True
    try:
        base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
        for i, price in enumerate(["10.00", "11.00", "12.00", "13.00", "14.00"]):
            market.apply(tick("AVAX", price, "1", at=base + timedelta(minutes=i, seconds=1)))
            market.apply(tick("AVAX", str(float(price) + 0.5), "1", at=base + timedelta(minutes=i, seconds=30)))
        market.apply(tick("AVAX", "15.00", "2", at=datetime.now(UTC)))
        await market.flush()
    finally:
        market.is_leader = False

    page = (await gql.data(CANDLES, {"first": 3}))["candles"]
    nodes = [e["node"] for e in page["edges"]]
    assert [n["closed"] for n in nodes] == [False, True, True]
    assert nodes[0]["open"] == "15.00"
    assert [n["open"] for n in nodes[1:]] == ["14.00", "13.00"]
    assert nodes[1]["high"] == "14.50" and nodes[1]["close"] == "14.50"
    assert nodes[1]["volume"] == "2.0000"
    opens = [datetime.fromisoformat(n["openTime"]) for n in nodes]
    assert opens == sorted(opens, reverse=True)
    assert page["pageInfo"]["hasNextPage"] is True

    rest = (await gql.data(CANDLES, {"first": 10, "after": page["pageInfo"]["endCursor"]}))["candles"]
    assert [e["node"]["open"] for e in rest["edges"]] == ["12.00", "11.00", "10.00"]
    assert rest["pageInfo"]["hasNextPage"] is False


async def test_bad_cursor_and_page_size_are_rejected(gql):
    assert error_codes(await gql.execute(CANDLES, {"after": "garbage"})) == ["BAD_USER_INPUT"]
    assert error_codes(await gql.execute(CANDLES, {"first": 0})) == ["BAD_USER_INPUT"]
    assert error_codes(await gql.execute(CANDLES, {"first": 100000})) == ["BAD_USER_INPUT"]
