"""The portfolio: hand-computed cost basis and P&L from real trades, holdings linked to
their trades and ledger entries, a time-weighted return that ignores deposits, a
constant number of store commands whatever the history, books that stay right when
entries arrive late, and the live subscription computed once per user."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from bson import Decimal128
from websockets.asyncio.client import connect

from cryptovault.documents.common import new_id
from cryptovault.documents.portfolio import PortfolioSnapshotDocument
from cryptovault.documents.trading import BalanceDocument, LedgerEntryDocument, TradeDocument
from cryptovault.market.assets import ASSETS
from cryptovault.market.ticks import Tick
from cryptovault.portfolio.service import PUSH_EVERY
from cryptovault.security.origin import Origin
from cryptovault.security.viewer import Viewer
from tests.conftest import bearer, error_codes, sign_up

PLACE = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }"
PORTFOLIO = """{ portfolio {
  totalValue cash cashAvailable realizedPnl unrealizedPnl dayChange dayChangePercent
  netDeposits complete
  holdings { asset quantity available held averageCost costBasis price marketValue
             unrealizedPnl unrealizedPnlPercent allocationPercent dayChange
             trades(first: 5) { edges { node { side price quantity fee
               ledgerEntries { asset amount kind } } } pageInfo { hasNextPage } } }
} }"""
HISTORY = """query($range: HistoryRange, $from: DateTime, $to: DateTime, $limit: Int!) {
  portfolio { history(range: $range, from: $from, to: $to) {
    from to startValue endValue netFlows profit timeWeightedReturn
    points(limit: $limit) { at value netFlows } } } }"""
WAIT = 10  # seconds: a bound for a message that should come, never an assertion


def quote(symbol: str, bid: str, ask: str) -> Tick:
    """A tick with exactly this bid and ask (last price: the ask)."""
    return Tick(symbol, D(ask), D(bid), D(ask), D(1), datetime.now(UTC), "test")


async def trade(gql, symbol: str, side: str, quantity: str) -> None:
    body = await gql.data(
        PLACE, {"i": {"symbol": symbol, "side": side, "type": "MARKET", "quantity": quantity}}
    )
    assert body["placeOrder"]["status"] == "FILLED", body


def holding(portfolio: dict, asset: str) -> dict:
    return next(h for h in portfolio["holdings"] if h["asset"] == asset)


async def test_buy_100_buy_200_sell_300_by_hand(user_gql, services):
    market = services.market
    market.apply(quote("BTC", "99.99", "100.00"))
    await trade(user_gql, "BTC", "BUY", "1")  # pays 100.00 + 0.20 taker fee
    market.apply(quote("BTC", "199.99", "200.00"))
    await trade(user_gql, "BTC", "BUY", "1")  # pays 200.00 + 0.40
    market.apply(quote("BTC", "300.00", "300.01"))
    await trade(user_gql, "BTC", "SELL", "1")  # receives 300.00 - 0.60
    p = (await user_gql.data(PORTFOLIO))["portfolio"]
    # Average cost (100.20 + 200.40) / 2 = 150.30; the sell realizes 299.40 - 150.30.
    assert D(p["realizedPnl"]) == D("149.10")
    btc = holding(p, "BTC")
    assert D(btc["quantity"]) == 1 and D(btc["averageCost"]) == D("150.30")
    assert D(btc["costBasis"]) == D("150.30")
    # Valued at the bid, 300.00: unrealized 300.00 - 150.30.
    assert D(btc["price"]) == D("300.00") and D(btc["marketValue"]) == D("300.00")
    assert D(btc["unrealizedPnl"]) == D("149.70") and D(p["unrealizedPnl"]) == D("149.70")
    assert D(btc["unrealizedPnlPercent"]) == D("99.60")  # 149.70 / 150.30
    # Cash 10,000 - 100.20 - 200.40 + 299.40.
    assert D(p["cash"]) == D("9998.80") and D(p["totalValue"]) == D("10298.80")
    assert D(btc["allocationPercent"]) == D("2.91")  # 300 / 10,298.80
    assert D(p["netDeposits"]) == D("10000.00") and p["complete"] is True
    day = market.quote("BTC").day
    assert D(btc["dayChange"]) == day.change(D("300.01")).quantize(D("0.01"))
    # The holding explains itself: its trades, newest first, with their ledger legs.
    trades = [e["node"] for e in btc["trades"]["edges"]]
    assert [(t["side"], D(t["price"]), D(t["fee"])) for t in trades] == [
        ("SELL", D("300.00"), D("0.60")),
        ("BUY", D("200.00"), D("0.40")),
        ("BUY", D("100.00"), D("0.20")),
    ]
    assert {(e["asset"], D(e["amount"])) for e in trades[0]["ledgerEntries"]} == {
        ("BTC", D(-1)),
        ("USD", D("299.40")),
    }


async def test_a_deposit_in_the_middle_of_the_range_is_not_return(user_gql, services):
    user_id = user_gql.payload["user"]["id"]
    portfolio, market = services.portfolio, services.market
    await portfolio.snapshot(user_id)  # 10,000 cash
    market.apply(quote("ETH", "999.90", "1000.00"))
    await trade(user_gql, "ETH", "BUY", "5")  # pays 5,010.00
    market.apply(quote("ETH", "1100.00", "1100.10"))
    await portfolio.snapshot(user_id)  # 4,990 + 5,500 = 10,490: +4.9 %
    admin = Viewer(new_id(), role="ADMIN")
    await services.trading.adjust_balance(admin, user_id, "USD", D(10000), "deposit", Origin())
    await portfolio.snapshot(user_id)  # 20,490: the deposit, not return
    market.apply(quote("ETH", "1210.00", "1210.10"))  # live: 14,990 + 6,050 = 21,040
    await portfolio.drain()
    h = (await user_gql.data(HISTORY, {"range": "DAY", "limit": 100}))["portfolio"]["history"]
    # (10,490 / 10,000) x ((20,490 - 10,000) / 10,490) x (21,040 / 20,490) - 1 = 7.72 %,
    # where the values alone grew 110 %.
    assert D(h["timeWeightedReturn"]) == D("7.72")
    assert D(h["startValue"]) == D(10000) and D(h["endValue"]) == D(21040)
    assert D(h["netFlows"]) == D(10000) and D(h["profit"]) == D(1040)
    values = [D(pt["value"]) for pt in h["points"]]
    assert values[0] == D(10000) and values[-1] == D(21040)
    assert D(10490) in values and D(20490) in values
    # A trade leaves its own point (taken right after the fill).
    trade_points = await PortfolioSnapshotDocument.find(
        {"user_id": user_id, "reason": "trade"}
    ).count()
    assert trade_points == 1
    exported = (await user_gql.data("mutation { exportMyData }"))["exportMyData"]
    assert len(exported["portfolio_snapshots"]) >= trade_points + 3  # 3 taken here


async def test_history_points_are_thinned_and_ranges_checked(user_gql, services):
    user_id = user_gql.payload["user"]["id"]
    for _ in range(6):
        await services.portfolio.snapshot(user_id)
    h = (await user_gql.data(HISTORY, {"limit": 3}))["portfolio"]["history"]
    assert len(h["points"]) == 3
    assert h["points"][0]["at"] < h["points"][1]["at"] < h["points"][2]["at"]
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    both = await user_gql.execute(HISTORY, {"range": "WEEK", "from": start, "limit": 3})
    assert error_codes(both) == ["BAD_USER_INPUT"]
    backwards = await user_gql.execute(
        HISTORY,
        {"from": start, "to": (datetime.now(UTC) - timedelta(hours=2)).isoformat(), "limit": 3},
    )
    assert error_codes(backwards) == ["BAD_USER_INPUT"]
    assert error_codes(await user_gql.execute(HISTORY, {"limit": 0})) == ["BAD_USER_INPUT"]
    # A closed range in the past: only stored points, nothing live.
    old = await user_gql.data(
        HISTORY,
        {
            "from": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
            "to": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
            "limit": 3,
        },
    )
    assert old["portfolio"]["history"]["points"] == []
    assert old["portfolio"]["history"]["timeWeightedReturn"] is None


async def test_scheduled_snapshots_are_taken_once_per_period(user_gql, services):
    user_id = user_gql.payload["user"]["id"]
    await user_gql.data(PORTFOLIO)  # opens the account
    bucket = datetime(2030, 1, 1, tzinfo=UTC)
    await services.portfolio.snapshot_all(bucket)
    await services.portfolio.snapshot_all(bucket)  # again (or on another instance)
    stored = await PortfolioSnapshotDocument.find(
        {"user_id": user_id, "reason": "schedule"}
    ).to_list()
    assert len(stored) == 1 and stored[0].value == D("10000.00")


def _synthetic_history(user_id: str, per_asset: int) -> tuple[list[dict], list[dict], dict]:
    """The user's ledger legs and trades as the engine writes them: `per_asset` buys of
    1 unit of every asset, at 1,000 + n USD plus a 1.00 fee each, paid by a deposit."""
    entries, trades = [], []
    start = datetime.now(UTC) - timedelta(hours=1)
    paid: dict[str, D] = {}
    for n in range(per_asset):
        for k, asset in enumerate(ASSETS):
            at = start + timedelta(milliseconds=10 * (n * len(ASSETS) + k))
            trade_id = f"{new_id()}:0"
            price = D(1000 + n)
            txn = f"fill:{trade_id}"
            for leg, (account_asset, amount) in enumerate([("USD", -(price + 1)), (asset, D(1))]):
                entries.append(
                    {
                        "_id": f"{txn}:{leg}",
                        "txn_id": txn,
                        "account": user_id,
                        "asset": account_asset,
                        "amount": Decimal128(amount),
                        "kind": "trade",
                        "trade_id": trade_id,
                        "created_at": at,
                    }
                )
            trades.append(
                {
                    "_id": trade_id,
                    "order_id": trade_id.split(":")[0],
                    "user_id": user_id,
                    "symbol": asset,
                    "side": "BUY",
                    "quantity": Decimal128(D(1)),
                    "price": Decimal128(price),
                    "fee": Decimal128(D(1)),
                    "liquidity": "TAKER",
                    "created_at": at,
                }
            )
            paid[asset] = paid.get(asset, D(0)) + price + 1
    # The money for it, deposited first by an admin (the USD balance stays as it was).
    spent = sum(paid.values(), D(0))
    txn = f"adjustment:{new_id()}"
    entries.insert(
        0,
        {
            "_id": f"{txn}:0",
            "txn_id": txn,
            "account": user_id,
            "asset": "USD",
            "amount": Decimal128(spent),
            "kind": "adjustment",
            "created_at": start - timedelta(seconds=1),
        },
    )
    return entries, trades, paid


async def _write_history(user_id: str, per_asset: int) -> dict[str, D]:
    entries, trades, paid = _synthetic_history(user_id, per_asset)
    for collection, docs in (
        (LedgerEntryDocument.get_pymongo_collection(), entries),
        (TradeDocument.get_pymongo_collection(), trades),
    ):
        for start in range(0, len(docs), 200):
            await collection.insert_many(docs[start : start + 200], ordered=False)
    await BalanceDocument.get_pymongo_collection().insert_many(
        [
            {
                "_id": f"{user_id}:{asset}",
                "account": user_id,
                "asset": asset,
                "available": Decimal128(D(per_asset)),
                "held": Decimal128(D(0)),
                "applied": [],
            }
            for asset in ASSETS
        ]
    )
    return paid


async def _commands_of(gql, query: str, commands) -> list[str]:
    await gql.data(query)  # warm: the checkpoint, authentication caches
    commands.only_this_task()
    commands.reset()
    await gql.data(query)
    return list(commands.commands)


async def test_the_portfolio_costs_the_same_store_commands_for_3_or_100_trades(
    gql_at, services, commands
):
    for tick_ in [quote(a.symbol, str(a.start_price), str(a.start_price)) for a in ASSETS.values()]:
        services.market.apply(tick_)
    clients = []
    for per_asset in (0, 10):  # 3 API trades on one asset; 100 trades on 10 assets
        client = gql_at()
        payload = await sign_up(client)
        client.headers.update(bearer(payload["accessToken"]))
        await client.data("{ account { balances { asset } } }")  # funded
        clients.append((client, payload["user"]["id"], per_asset))
    small, big = clients
    for _ in range(3):
        await trade(small[0], "LTC", "BUY", "1")
    started = time.perf_counter()
    paid = await _write_history(big[1], big[2])
    written_in = time.perf_counter() - started
    refolds = services.portfolio.books.refolds
    p = (await big[0].data(PORTFOLIO))["portfolio"]
    assert services.portfolio.books.refolds == refolds + 1  # the first read folds it all
    assert len(p["holdings"]) == len(ASSETS)
    for asset, total in paid.items():
        got = holding(p, asset)
        assert D(got["quantity"]) == 10 and D(got["costBasis"]) == total
    small_commands = await _commands_of(small[0], PORTFOLIO, commands)
    big_commands = await _commands_of(big[0], PORTFOLIO, commands)
    assert big_commands == small_commands, (small_commands, big_commands)
    portfolio_reads = commands.on("portfolio_books", "ledger", "balances", "trades")
    # The books (the checkpoint, and a count of ledger entries: an aggregate), the
    # balances, every holding's trades in one read, and their ledger entries in one.
    assert portfolio_reads == ["find", "aggregate", "find", "aggregate", "find"], portfolio_reads
    print(f"\n201 ledger entries and 100 trades written in {written_in:.1f} s")


async def test_books_catch_up_with_new_trades_and_refold_after_a_late_entry(user_gql, services):
    user_id = user_gql.payload["user"]["id"]
    books = services.portfolio.books
    services.market.apply(quote("SOL", "99.00", "100.00"))
    await trade(user_gql, "SOL", "BUY", "1")  # 100.20
    await user_gql.data(PORTFOLIO)
    refolds = books.refolds
    await trade(user_gql, "SOL", "BUY", "1")  # 100.20 again
    sol = holding((await user_gql.data(PORTFOLIO))["portfolio"], "SOL")
    assert D(sol["quantity"]) == 2 and D(sol["costBasis"]) == D("200.40")
    assert books.refolds == refolds  # caught up from the newest entries only
    # A fill whose entries carry a time long past (the recovery sweep finishing it
    # after a crash): the count finds it, everything is refolded.
    at = datetime.now(UTC) - timedelta(hours=2)
    txn = f"fill:{new_id()}:0"
    await LedgerEntryDocument.get_pymongo_collection().insert_many(
        [
            {
                "_id": f"{txn}:0",
                "txn_id": txn,
                "account": user_id,
                "asset": "USD",
                "amount": Decimal128(D("-50.10")),
                "kind": "trade",
                "created_at": at,
            },
            {
                "_id": f"{txn}:1",
                "txn_id": txn,
                "account": user_id,
                "asset": "SOL",
                "amount": Decimal128(D(1)),
                "kind": "trade",
                "created_at": at,
            },
        ]
    )
    await BalanceDocument.get_pymongo_collection().update_one(
        {"_id": f"{user_id}:SOL"}, {"$inc": {"available": Decimal128(D(1))}}
    )
    sol = holding((await user_gql.data(PORTFOLIO))["portfolio"], "SOL")
    assert books.refolds == refolds + 1
    # In time order: 50.10, then 100.20 twice.
    assert D(sol["quantity"]) == 3 and D(sol["costBasis"]) == D("250.50")


async def test_the_portfolio_needs_a_viewer_and_the_portfolio_read_scope(gql, user_gql):
    assert error_codes(await gql.execute("{ portfolio { totalValue } }")) == ["UNAUTHENTICATED"]
    created = await user_gql.data(
        'mutation { createApiKey(name: "m", scopes: [MARKET_READ]) { key } }'
    )
    body = await gql.execute(
        "{ portfolio { totalValue } }", headers={"X-API-Key": created["createApiKey"]["key"]}
    )
    assert error_codes(body) == ["FORBIDDEN"]


SUBSCRIBE = "subscription { portfolio { totalValue holdings { asset marketValue } } }"


async def open_socket(live_url: str, token: str):
    ws = await connect(f"ws://{live_url}/graphql", subprotocols=["graphql-transport-ws"])
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    )
    assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
    return ws


async def receive(ws) -> dict:
    message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert message["type"] == "next", message
    return message["payload"]["data"]["portfolio"]


async def test_live_portfolio_is_valued_once_per_user_for_every_subscriber(
    live_url, user_gql, services
):
    market, portfolio = services.market, services.portfolio
    market.apply(quote("DOT", "2.000", "2.001"))
    await trade(user_gql, "DOT", "BUY", "100")
    token = user_gql.payload["accessToken"]
    first, second = await open_socket(live_url, token), await open_socket(live_url, token)
    a, b = await receive(first), await receive(second)
    assert a == b and holding(a, "DOT")["marketValue"] == "200.00"
    computed = portfolio.valuations
    market.apply(quote("DOT", "2.500", "2.501"))  # a held asset moves
    a, b = await receive(first), await receive(second)
    assert a == b and holding(a, "DOT")["marketValue"] == "250.00"
    assert portfolio.valuations == computed + 1  # once for both subscribers
    # A trade lands: pushed too, with the new holding.
    market.apply(quote("AVAX", "10.00", "10.01"))
    await trade(user_gql, "AVAX", "BUY", "2")
    # (a DOT tick may be pushed first; the trade's push follows within a second)
    assets: set[str] = set()
    while assets != {"DOT", "AVAX"}:
        assets = {h["asset"] for h in (await receive(first))["holdings"]}
    await first.close()
    await second.close()


async def test_pushes_are_at_most_one_a_second_and_only_for_held_assets(
    live_url, user_gql, services
):
    market, portfolio = services.market, services.portfolio
    market.apply(quote("LINK", "10.000", "10.001"))
    await trade(user_gql, "LINK", "BUY", "1")
    ws = await open_socket(live_url, user_gql.payload["accessToken"])
    await receive(ws)
    computed = portfolio.valuations
    started = time.monotonic()
    for i in range(40):
        market.apply(quote("LINK", f"{11 + i / 100:.3f}", f"{11.001 + i / 100:.3f}"))
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started
    await receive(ws)
    # 40 price moves over `elapsed` seconds: one valuation per second at most.
    assert portfolio.valuations - computed <= int(elapsed / PUSH_EVERY) + 2
    # Another asset's price is not this user's business.
    await asyncio.sleep(PUSH_EVERY)
    computed = portfolio.valuations
    for _ in range(5):
        market.apply(quote("XRP", "2.0000", "2.0001"))
    await asyncio.sleep(PUSH_EVERY * 1.5)
    assert portfolio.valuations == computed
    await ws.close()


async def test_history_ends_with_the_portfolio_already_valued_not_a_second_valuation(
    user_gql, services, commands
):
    """`portfolio { history }` (and each push of the portfolio subscription) values
    the portfolio once: history adds only its two snapshot reads."""
    services.market.apply(quote("SOL", "99.00", "100.00"))
    await trade(user_gql, "SOL", "BUY", "1")
    alone = await _commands_of(user_gql, "{ portfolio { totalValue } }", commands)
    with_history = await _commands_of(
        user_gql, "{ portfolio { totalValue history { endValue } } }", commands
    )
    assert sorted(with_history) == sorted([*alone, "find", "find"]), (alone, with_history)
    body = await user_gql.data("{ portfolio { totalValue history { endValue } } }")
    assert body["portfolio"]["history"]["endValue"] == body["portfolio"]["totalValue"]
