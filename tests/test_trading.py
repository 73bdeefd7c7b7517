"""Trading through the API, signed in for real: funding, holds, fills from ticks
only, fees and rounding, cancel, expiry, idempotency, concurrency, and the books
reconciling after everything."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cryptovault.documents.trading import LedgerEntryDocument, OrderDocument
from cryptovault.events.bus import MemoryBus
from cryptovault.market.service import TICKS_CHANNEL
from cryptovault.market.ticks import Tick
from cryptovault.trading.liquidity import MemoryLiquidity
from cryptovault.trading.reconcile import reconcile
from tests.conftest import PASSWORD, bearer, error_codes, log_in, sign_up, tick

PLACE = """mutation($i: PlaceOrderInput!) {
  placeOrder(input: $i) {
    id clientOrderId status side type quantity filledQuantity averageFillPrice fees
    heldAsset heldAmount limitPrice rejectReason history { status }
    trades { id quantity price fee liquidity ledgerEntries { asset amount balanceAfter kind } }
  }
}"""
ACCOUNT = "{ account { balances { asset available held total } } }"
CANCEL = "mutation($id: ID!) { cancelOrder(id: $id) { id status heldAmount } }"
ORDER = "query($id: ID!) { order(id: $id) { id status filledQuantity averageFillPrice fees heldAmount trades { price quantity liquidity fee } } }"


def balances(body: dict) -> dict[str, dict[str, str]]:
    return {b["asset"]: b for b in body["account"]["balances"]}


async def place(gql, **fields) -> dict:
    body = await gql.execute(PLACE, {"i": fields})
    return body


async def placed(gql, **fields) -> dict:
    body = await place(gql, **fields)
    assert not body.get("errors"), body
    return body["data"]["placeOrder"]


async def books_are_clean(services) -> None:
    report = await reconcile(services.store.db)
    assert report.ok, report.discrepancies


@pytest.fixture(autouse=True)
def quotes(services):
    """Known prices: BTC bid/ask around 100.00, ETH around 2000.00."""
    services.market.apply(tick("BTC", "100.00"))
    services.market.apply(tick("ETH", "2000.00"))


async def test_a_new_account_is_funded_once_even_when_touched_concurrently(user_gql, services):
    results = await asyncio.gather(*(user_gql.data(ACCOUNT) for _ in range(8)))
    for body in results:
        assert (
            balances(body)["USD"]
            == {"asset": "USD", "available": "10000.00", "held": "0.00", "total": "10000.00"}
            or balances(body)["USD"]["total"] == "10000"
        )
    user_id = user_gql.payload["user"]["id"]
    funding = await LedgerEntryDocument.find({"account": user_id, "kind": "funding"}).to_list()
    assert len(funding) == 1 and funding[0].amount == Decimal("10000")
    await books_are_clean(services)


async def test_market_buy_fills_at_the_ask_with_the_taker_fee(user_gql, services):
    ask = services.market.quote("BTC").tick.ask
    order = await placed(user_gql, symbol="BTC", side="BUY", type="MARKET", quantity="0.5")
    assert order["status"] == "FILLED"
    assert Decimal(order["averageFillPrice"]) == ask
    (trade,) = order["trades"]
    notional = (Decimal("0.5") * ask).quantize(Decimal("0.01"), rounding="ROUND_CEILING")
    fee = (Decimal("0.5") * ask * Decimal("0.002")).quantize(
        Decimal("0.01"), rounding="ROUND_CEILING"
    )
    assert (trade["liquidity"], Decimal(trade["fee"])) == ("TAKER", fee)
    assert Decimal(order["fees"]) == fee
    # The viewer sees their own legs of the fill (not the house's).
    legs = {(e["asset"], e["kind"]): Decimal(e["amount"]) for e in trade["ledgerEntries"]}
    assert legs == {("USD", "trade"): -(notional + fee), ("BTC", "trade"): Decimal("0.5")}
    got = balances(await user_gql.data(ACCOUNT))
    assert Decimal(got["USD"]["available"]) == Decimal(10000) - notional - fee
    assert Decimal(got["USD"]["held"]) == 0  # the slippage allowance was released
    assert Decimal(got["BTC"]["available"]) == Decimal("0.5")
    await books_are_clean(services)


async def test_selling_credits_proceeds_rounded_down_minus_the_fee(user_gql, services):
    await placed(user_gql, symbol="BTC", side="BUY", type="MARKET", quantity="1")
    services.market.apply(tick("BTC", "123.45"))
    bid = services.market.quote("BTC").tick.bid
    before = Decimal(balances(await user_gql.data(ACCOUNT))["USD"]["available"])
    order = await placed(user_gql, symbol="BTC", side="SELL", type="MARKET", quantity="0.33333333")
    assert order["status"] == "FILLED"
    notional = Decimal("0.33333333") * bid
    proceeds = notional.quantize(Decimal("0.01"), rounding="ROUND_FLOOR")
    fee = (notional * Decimal("0.002")).quantize(Decimal("0.01"), rounding="ROUND_CEILING")
    after = balances(await user_gql.data(ACCOUNT))
    assert Decimal(after["USD"]["available"]) == before + proceeds - fee
    assert Decimal(after["BTC"]["available"]) == Decimal("0.66666667")
    await books_are_clean(services)


async def test_a_limit_order_rests_fills_once_on_a_crossing_tick_then_cannot_be_canceled(
    user_gql, services
):
    order = await placed(
        user_gql, symbol="ETH", side="BUY", type="LIMIT", quantity="1", limitPrice="1900.00"
    )
    assert order["status"] == "OPEN" and order["trades"] == []
    # Held: the limit value plus the highest fee it could pay (taker 0.2 %).
    assert Decimal(order["heldAmount"]) == Decimal("1903.80")
    held = balances(await user_gql.data(ACCOUNT))["USD"]
    assert Decimal(held["held"]) == Decimal("1903.80")
    # A tick above the limit does nothing; one at or below fills at the ask (<= limit).
    await services.trading.match_tick(tick("ETH", "1950.00"))
    assert (await user_gql.data(ORDER, {"id": order["id"]}))["order"]["status"] == "OPEN"
    crossing = tick("ETH", "1890.00")
    services.market.apply(crossing)
    await services.trading.match_tick(crossing)
    await services.trading.match_tick(crossing)  # the same tick again: no second fill
    done = (await user_gql.data(ORDER, {"id": order["id"]}))["order"]
    assert done["status"] == "FILLED" and len(done["trades"]) == 1
    (trade,) = done["trades"]
    assert trade["liquidity"] == "MAKER"
    assert Decimal(trade["price"]) == crossing.ask <= Decimal("1900.00")
    assert Decimal(done["heldAmount"]) == 0
    assert Decimal(balances(await user_gql.data(ACCOUNT))["USD"]["held"]) == 0
    body = await user_gql.execute(CANCEL, {"id": order["id"]})
    assert error_codes(body) == ["CONFLICT"]
    await books_are_clean(services)


async def test_cancel_releases_the_hold(user_gql, services):
    order = await placed(
        user_gql, symbol="BTC", side="BUY", type="LIMIT", quantity="2", limitPrice="50.00"
    )
    canceled = (await user_gql.data(CANCEL, {"id": order["id"]}))["cancelOrder"]
    assert canceled["status"] == "CANCELED" and Decimal(canceled["heldAmount"]) == 0
    assert Decimal(balances(await user_gql.data(ACCOUNT))["USD"]["held"]) == 0
    assert error_codes(await user_gql.execute(CANCEL, {"id": order["id"]})) == ["CONFLICT"]
    await books_are_clean(services)


async def test_gtd_orders_expire_and_release_their_hold(user_gql, services):
    expires = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    order = await placed(
        user_gql,
        symbol="BTC",
        side="BUY",
        type="LIMIT",
        quantity="1",
        limitPrice="10.00",
        timeInForce="GTD",
        expiresAt=expires,
    )
    assert await services.trading.expire_due(datetime.now(UTC)) == 0
    assert await services.trading.expire_due(datetime.now(UTC) + timedelta(minutes=6)) >= 1
    got = (await user_gql.data(ORDER, {"id": order["id"]}))["order"]
    assert got["status"] == "EXPIRED" and Decimal(got["heldAmount"]) == 0
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    body = await place(
        user_gql,
        symbol="BTC",
        side="BUY",
        type="LIMIT",
        quantity="1",
        limitPrice="10.00",
        timeInForce="GTD",
        expiresAt=past,
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    await books_are_clean(services)


async def test_insufficient_funds_holds_nothing_and_records_the_order_rejected(user_gql, services):
    user_id = user_gql.payload["user"]["id"]
    body = await place(user_gql, symbol="ETH", side="BUY", type="MARKET", quantity="10")
    assert error_codes(body) == ["INSUFFICIENT_FUNDS"]
    body = await place(user_gql, symbol="BTC", side="SELL", type="MARKET", quantity="1")
    assert error_codes(body) == ["INSUFFICIENT_FUNDS"]
    rejected = await OrderDocument.find({"user_id": user_id}).to_list()
    assert [(o.status, o.hold_remaining) for o in rejected] == [("REJECTED", 0)] * 2
    assert all(o.reject_reason.startswith("insufficient funds") for o in rejected)
    got = balances(await user_gql.data(ACCOUNT))
    assert got["USD"]["held"] in ("0", "0.00") and "BTC" not in got
    await books_are_clean(services)


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"quantity": "0.000000001"}, "quantity"),  # finer than the increment
        ({"quantity": "0.000001"}, "quantity"),  # below the minimum size
        ({"quantity": "-1"}, "quantity"),
        ({"quantity": "1", "quoteQuantity": "10"}, "quantity"),
        ({"type": "LIMIT", "quantity": "1"}, "limitPrice"),
        ({"type": "LIMIT", "quantity": "1", "limitPrice": "100.001"}, "limitPrice"),
        ({"type": "STOP", "quantity": "1"}, "stopPrice"),
        ({"quantity": "1", "timeInForce": "GTD"}, "expiresAt"),
        ({"symbol": "NOPE", "quantity": "1"}, None),
        ({"quantity": "0.005"}, "quantity"),  # 0.50 USD: below the minimum value
        # Huge numbers: a clear refusal, not a Decimal error deep in the hold maths.
        ({"quantity": "1000000000000000000000"}, "quantity"),
        (
            {"type": "LIMIT", "quantity": "1000000000000", "limitPrice": "1000000000000"},
            "quantity",
        ),  # each within bounds, their product (the order value) is not
        ({"quoteQuantity": "1" + "0" * 30, "quantity": None}, "quoteQuantity"),
    ],
)
async def test_invalid_orders_are_bad_user_input(user_gql, fields, field):
    body = await place(user_gql, **{"symbol": "BTC", "side": "BUY", "type": "MARKET", **fields})
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    if field:
        assert body["errors"][0]["extensions"].get("field") == field


async def test_fill_or_kill_and_immediate_or_cancel(user_gql, services):
    engine = services.trading
    # The book offers 150 USD per tick: 1.5 BTC at ~100.
    engine.liquidity, original = MemoryLiquidity(Decimal("150")), engine.liquidity
    try:
        fok = await placed(
            user_gql,
            symbol="BTC",
            side="BUY",
            type="LIMIT",
            quantity="2",
            limitPrice="110.00",
            timeInForce="FOK",
        )
        assert fok["status"] == "CANCELED" and fok["trades"] == []
        assert Decimal(fok["heldAmount"]) == 0
        services.market.apply(tick("BTC", "100.00"))  # a fresh tick: a fresh book
        ioc = await placed(
            user_gql,
            symbol="BTC",
            side="BUY",
            type="LIMIT",
            quantity="2",
            limitPrice="110.00",
            timeInForce="IOC",
        )
        assert ioc["status"] == "CANCELED"
        assert Decimal("0") < Decimal(ioc["filledQuantity"]) < Decimal("2")
        assert Decimal(ioc["heldAmount"]) == 0
        services.market.apply(tick("BTC", "100.00"))
        small = await placed(
            user_gql,
            symbol="BTC",
            side="BUY",
            type="LIMIT",
            quantity="1",
            limitPrice="110.00",
            timeInForce="FOK",
        )
        assert small["status"] == "FILLED"
    finally:
        engine.liquidity = original
    assert Decimal(balances(await user_gql.data(ACCOUNT))["USD"]["held"]) == 0
    await books_are_clean(services)


async def test_same_client_order_id_twenty_times_concurrently_is_one_order(user_gql, services):
    cid = f"cid-{uuid.uuid4().hex[:8]}"
    fields = {
        "symbol": "BTC",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "1",
        "limitPrice": "20.00",
        "clientOrderId": cid,
    }
    bodies = await asyncio.gather(*(place(user_gql, **fields) for _ in range(20)))
    ids = {b["data"]["placeOrder"]["id"] for b in bodies}
    assert len(ids) == 1
    user_id = user_gql.payload["user"]["id"]
    assert await OrderDocument.find({"user_id": user_id, "client_order_id": cid}).count() == 1
    held = balances(await user_gql.data(ACCOUNT))["USD"]
    assert Decimal(held["held"]) == Decimal("20.04")  # one hold, not twenty
    await books_are_clean(services)


async def test_two_hundred_concurrent_market_buys_spend_only_what_exists(gql_at, services):
    buyer = gql_at()
    payload = await sign_up(buyer)
    buyer.headers.update(bearer(payload["accessToken"]))
    # ETH at ~2000: one order of 0.45 ETH holds ~918 USD: funds for about 10.
    bodies = await asyncio.gather(
        *(
            place(buyer, symbol="ETH", side="BUY", type="MARKET", quantity="0.45")
            for _ in range(200)
        )
    )
    filled = [b for b in bodies if not b.get("errors")]
    refused = [b for b in bodies if b.get("errors")]
    assert {tuple(error_codes(b)) for b in refused} == {("INSUFFICIENT_FUNDS",)}, [
        b["errors"][0]["message"] for b in refused if error_codes(b) != ["INSUFFICIENT_FUNDS"]
    ][:3]
    assert all(b["data"]["placeOrder"]["status"] == "FILLED" for b in filled), [
        b["data"]["placeOrder"] for b in filled if b["data"]["placeOrder"]["status"] != "FILLED"
    ][:2]
    got = balances(await buyer.data(ACCOUNT))
    usd = Decimal(got["USD"]["available"])
    assert usd >= 0 and Decimal(got["USD"]["held"]) == 0
    assert Decimal(got["ETH"]["available"]) == Decimal("0.45") * len(filled)
    # Each order held ~911 USD (ask + 1 % slippage + fee) until it filled, so 10 fit
    # in 10,000; an 11th fits only if it came after the unused slippage of earlier
    # fills was released.
    assert len(filled) in (10, 11)
    spent = sum(
        Decimal(t["quantity"]) * Decimal(t["price"]) + Decimal(t["fee"])
        for b in filled
        for t in b["data"]["placeOrder"]["trades"]
    )
    assert abs(usd - (Decimal(10000) - spent)) <= Decimal("0.01") * len(filled)
    await books_are_clean(services)


async def test_a_stale_tick_off_the_bus_fills_nothing(user_gql, services):
    """The engine hears ticks through the market (`add_tick_listener`), as every other
    listener does: a replayed tick that the market refuses as stale (over 5 s older
    than its latest) moves no price and fills no order at its old price."""
    assert isinstance(services.bus, MemoryBus)  # delivery is done when publish returns
    assert services.market.is_leader
    order = await placed(
        user_gql, symbol="BTC", side="BUY", type="LIMIT", quantity="0.1", limitPrice="95.00"
    )
    assert order["status"] == "OPEN"
    stale = tick("BTC", "90.00", at=datetime.now(UTC) - timedelta(minutes=1))
    await services.bus.publish(TICKS_CHANNEL, stale.to_message())
    await asyncio.gather(*list(services.trading._workers))  # any matching it started
    assert services.market.quote("BTC").tick.price == Decimal("100.00")
    assert (await user_gql.data(ORDER, {"id": order["id"]}))["order"]["status"] == "OPEN"
    await user_gql.data(CANCEL, {"id": order["id"]})
    await books_are_clean(services)


async def test_partial_fills_over_several_ticks_give_a_weighted_average(user_gql, services):
    engine = services.trading
    engine.liquidity, original = MemoryLiquidity(Decimal("100")), engine.liquidity
    try:
        first_tick = tick("BTC", "100.00")
        services.market.apply(first_tick)
        order = await placed(
            user_gql, symbol="BTC", side="BUY", type="LIMIT", quantity="2", limitPrice="110.00"
        )
        assert order["status"] == "PARTIALLY_FILLED"
        assert Decimal(order["filledQuantity"]) < 2
        for price in ("101.00", "102.00", "103.00"):
            t = tick("BTC", price)
            services.market.apply(t)
            await engine.match_tick(t)
        done = (await user_gql.data(ORDER, {"id": order["id"]}))["order"]
    finally:
        engine.liquidity = original
        services.market.apply(tick("BTC", "100.00"))
    assert done["status"] == "FILLED" and len(done["trades"]) >= 2
    total = sum(Decimal(t["quantity"]) for t in done["trades"])
    vwap = sum(Decimal(t["quantity"]) * Decimal(t["price"]) for t in done["trades"]) / total
    assert total == 2
    assert abs(Decimal(done["averageFillPrice"]) - vwap) < Decimal("0.0001")
    assert {t["liquidity"] for t in done["trades"][1:]} == {"MAKER"}
    await books_are_clean(services)


async def test_stop_orders_trigger_on_the_last_price(user_gql, services):
    await placed(user_gql, symbol="BTC", side="BUY", type="MARKET", quantity="1")
    stop = await placed(
        user_gql, symbol="BTC", side="SELL", type="STOP", quantity="1", stopPrice="90.00"
    )
    assert stop["status"] == "OPEN"
    await services.trading.match_tick(tick("BTC", "95.00"))
    assert (await user_gql.data(ORDER, {"id": stop["id"]}))["order"]["status"] == "OPEN"
    falling = tick("BTC", "89.00")
    services.market.apply(falling)
    await services.trading.match_tick(falling)
    done = (await user_gql.data(ORDER, {"id": stop["id"]}))["order"]
    assert done["status"] == "FILLED"
    assert Decimal(done["trades"][0]["price"]) == falling.bid
    services.market.apply(tick("BTC", "100.00"))
    await books_are_clean(services)


async def test_another_users_order_is_not_found(user_gql, gql_at):
    order = await placed(
        user_gql, symbol="BTC", side="BUY", type="LIMIT", quantity="1", limitPrice="5.00"
    )
    other = gql_at()
    other.headers.update(bearer((await sign_up(other))["accessToken"]))
    assert (await other.data(ORDER, {"id": order["id"]}))["order"] is None
    assert error_codes(await other.execute(CANCEL, {"id": order["id"]})) == ["NOT_FOUND"]
    assert error_codes(await gql_at().execute(ACCOUNT)) == ["UNAUTHENTICATED"]


async def test_freezing_cancels_open_orders_and_blocks_trading(user_gql, gql_at, services):
    order = await placed(
        user_gql, symbol="BTC", side="BUY", type="LIMIT", quantity="1", limitPrice="5.00"
    )
    admin = gql_at()
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    await services.identity.create_admin(email, PASSWORD)
    admin.headers.update(bearer((await log_in(admin, email))["data"]["login"]["accessToken"]))
    user_id = user_gql.payload["user"]["id"]
    await admin.data(
        'mutation($id: ID!) { freezeUser(id: $id, reason: "review") { frozen } }', {"id": user_id}
    )
    got = (await user_gql.data(ORDER, {"id": order["id"]}))["order"]
    assert got["status"] == "CANCELED" and Decimal(got["heldAmount"]) == 0
    body = await place(user_gql, symbol="BTC", side="BUY", type="MARKET", quantity="0.1")
    assert error_codes(body) == ["FORBIDDEN"]
    # An admin credit goes through the ledger and is audited.
    adjusted = await admin.data(
        "mutation($i: AdjustBalanceInput!) { adjustBalance(input: $i) { asset available } }",
        {"i": {"userId": user_id, "asset": "usd", "amount": "250.00", "reason": "goodwill"}},
    )
    assert adjusted["adjustBalance"]["asset"] == "USD"
    huge = await admin.execute(
        "mutation($i: AdjustBalanceInput!) { adjustBalance(input: $i) { asset } }",
        {"i": {"userId": user_id, "asset": "USD", "amount": "1" + "0" * 25, "reason": "x"}},
    )
    assert error_codes(huge) == ["BAD_USER_INPUT"]
    log = await admin.data(
        'query($u: ID) { auditLog(userId: $u, action: "admin.balance_adjusted") { edges { node { details } } } }',
        {"u": user_id},
    )
    (entry,) = log["auditLog"]["edges"]
    assert entry["node"]["details"]["amount"] == "250.00"
    report = await admin.data(
        "{ reconciliation { ok discrepancies trialBalance { asset total } } }"
    )
    assert report["reconciliation"]["ok"] is True
    assert all(Decimal(t["total"]) == 0 for t in report["reconciliation"]["trialBalance"])
    body = await user_gql.execute("{ reconciliation { ok } }")
    assert error_codes(body) == ["FORBIDDEN"]


async def test_the_orders_list_costs_the_same_store_commands_for_3_or_20_orders(
    gql_at, services, commands
):
    query = "{ orders(first: 20) { edges { node { id status trades { id price ledgerEntries { amount } } } } } }"

    async def count_for(n: int) -> int:
        client = gql_at()
        client.headers.update(bearer((await sign_up(client))["accessToken"]))
        for _ in range(n):
            await placed(client, symbol="BTC", side="BUY", type="MARKET", quantity="0.01")
        await client.data(query)  # warm: authentication caches, account
        commands.only_this_task()  # not the trading sweeper's queries
        commands.reset()
        body = await client.data(query)
        assert len(body["orders"]["edges"]) == n
        return list(commands.targets)

    few, many = await count_for(3), await count_for(20)
    assert len(few) == len(many), (few, many)


# -- issue 11 regressions, through the API ----------------------------------------------


async def test_a_quote_quantity_buy_at_an_awkward_ask_fills_within_the_amount(user_gql, services):
    """quoteQuantity 1000.00 at ask 91,265.79 was sized 998.01 + 2.00 fee = 1,000.01: the
    client got INSUFFICIENT_FUNDS while the order stayed OPEN with a fill never done."""
    ask = Decimal("91265.79")
    services.market.apply(Tick("BTC", ask - 1, ask - 2, ask, Decimal(1), datetime.now(UTC)))
    order = await placed(user_gql, symbol="BTC", side="BUY", type="MARKET", quoteQuantity="1000.00")
    assert order["status"] == "FILLED" and Decimal(order["heldAmount"]) == 0
    (trade,) = order["trades"]
    paid = -sum(Decimal(e["amount"]) for e in trade["ledgerEntries"] if e["asset"] == "USD")
    assert paid <= Decimal("1000.00")
    usd = balances(await user_gql.data(ACCOUNT))["USD"]
    assert Decimal(usd["available"]) == Decimal(10000) - paid and Decimal(usd["held"]) == 0
    await books_are_clean(services)


async def test_a_marketable_limit_buy_of_the_minimum_size_at_the_ask_fills_whole(
    user_gql, services
):
    """0.00002 BTC limited at the ask filled 0.00001989 and stayed PARTIALLY_FILLED."""
    ask = Decimal("91265.79")
    services.market.apply(Tick("BTC", ask - 1, ask - 2, ask, Decimal(1), datetime.now(UTC)))
    order = await placed(
        user_gql, symbol="BTC", side="BUY", type="LIMIT", quantity="0.00002", limitPrice=str(ask)
    )
    assert (order["status"], order["filledQuantity"]) == ("FILLED", "0.00002")
    await books_are_clean(services)


async def test_one_unaffordable_client_order_id_sent_fifty_times_at_once_is_refused_fifty_times(
    user_gql, services
):
    """50 concurrent copies: 2 INSUFFICIENT_FUNDS, 23 CONFLICT and 25 'successes'
    returning PENDING orders whose ids no longer existed."""
    fields = {
        "symbol": "BTC",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "1000",
        "limitPrice": "100.00",
        "clientOrderId": f"big-{uuid.uuid4().hex[:6]}",
    }
    bodies = await asyncio.gather(*(place(user_gql, **fields) for _ in range(50)))
    assert [error_codes(b) for b in bodies] == [["INSUFFICIENT_FUNDS"]] * 50
    user_id = user_gql.payload["user"]["id"]
    found = await OrderDocument.find(
        {"user_id": user_id, "client_order_id": fields["clientOrderId"]}
    ).to_list()
    assert [(o.status, o.hold_remaining) for o in found] == [("REJECTED", 0)]
    await books_are_clean(services)


async def test_an_admin_adjustment_retried_with_its_key_is_applied_once(gql_at, services):
    from tests.test_admin import admin_headers

    admin = gql_at()
    admin.headers.update(await admin_headers(services, admin))
    user = gql_at()
    payload = await sign_up(user)
    user.headers.update(bearer(payload["accessToken"]))
    adjust = "mutation($i: AdjustBalanceInput!) { adjustBalance(input: $i) { asset available } }"
    i = {
        "userId": payload["user"]["id"],
        "asset": "USD",
        "amount": "250.00",
        "reason": "goodwill",
        "idempotencyKey": "ticket-4711",
    }
    bodies = await asyncio.gather(*(admin.execute(adjust, {"i": i}) for _ in range(5)))
    assert {b["data"]["adjustBalance"]["available"] for b in bodies} == {"10250.00"}
    again = await admin.execute(adjust, {"i": {**i, "amount": "300.00"}})
    assert error_codes(again) == ["CONFLICT"]
    got = balances(await user.data(ACCOUNT))["USD"]
    assert Decimal(got["available"]) == Decimal("10250.00")
    await books_are_clean(services)
