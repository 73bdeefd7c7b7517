"""The tick matcher reads only the resting orders a tick crosses (or closes, when
expired): its store filter answers exactly what the matching rules decide, and many
resting orders far from the price cost nothing per tick."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bson import Decimal128

from cryptovault.documents.enums import OrderType, Side
from cryptovault.documents.trading import OrderDocument
from cryptovault.market.assets import get_asset
from cryptovault.market.ticks import Tick
from cryptovault.trading import matching
from tests.conftest import tick
from tests.test_trading import books_are_clean, placed


def acts_on(doc: dict[str, Any], t: Tick, now: datetime) -> bool:
    """What TradingEngine._match_one does something with: an expired order (closed),
    a stop the tick triggers, an order the tick fills."""
    if doc["time_in_force"] == "GTD" and doc["expires_at"] <= now:
        return True
    kind, side = OrderType(doc["type"]), Side(doc["side"])
    if kind.has_stop and not doc["triggered"]:
        return matching.stop_crossed(side, doc["stop_price"].to_decimal(), t)
    limit = doc["limit_price"].to_decimal() if doc["limit_price"] is not None else None
    return matching.execution_price(side, kind, limit, True, t) is not None


def resting(symbol: str, n: int, **fields: Any) -> dict[str, Any]:
    """An open order as the engine writes it (with its match key)."""
    now = datetime.now(UTC)
    doc = {
        "_id": f"matcher-{uuid.uuid4().hex}",
        "user_id": "matcher-test",
        "idempotency_key": f"matcher:{uuid.uuid4().hex}",
        "symbol": symbol,
        "status": "OPEN",
        "owner": None,
        "time_in_force": "GTC",
        "expires_at": None,
        "triggered": False,
        "limit_price": None,
        "stop_price": None,
        "created_at": now + timedelta(microseconds=n),
        **fields,
    }
    return {**doc, "match_key": matching.match_key_of(doc)}


async def test_the_store_filter_selects_exactly_the_orders_the_rules_act_on(services, monkeypatch):
    # The leader's sweep (every second) would expire the expired order below before
    # the filter reads it: this test is about the filter alone.
    async def no_expiry(now=None) -> int:
        return 0

    monkeypatch.setattr(services.trading, "expire_due", no_expiry)
    symbol = "DOT"
    t = tick(symbol, "10.000")
    now = datetime.now(UTC)
    inc = get_asset(symbol).price_increment
    prices = [t.bid - inc, t.bid, t.price, t.ask, t.ask + inc, t.bid - 100 * inc, t.ask * 2]
    docs = []
    for kind, side, triggered in itertools.product(OrderType, Side, (False, True)):
        if triggered and not kind.has_stop:
            continue
        for limit, stop in itertools.product(
            prices if kind.has_limit else [None], prices if kind.has_stop else [None]
        ):
            docs.append(
                resting(
                    symbol,
                    len(docs),
                    type=kind.value,
                    side=side.value,
                    triggered=triggered,
                    limit_price=Decimal128(limit) if limit is not None else None,
                    stop_price=Decimal128(stop) if stop is not None else None,
                )
            )
    far = t.bid / 2
    docs.append(  # expired, far from the price: closed on the tick all the same
        resting(
            symbol,
            len(docs),
            type="LIMIT",
            side="BUY",
            limit_price=Decimal128(far),
            time_in_force="GTD",
            expires_at=now - timedelta(seconds=1),
        )
    )
    orders = OrderDocument.get_pymongo_collection()
    await orders.insert_many(docs)
    try:
        query = {"symbol": symbol, "status": "OPEN", "owner": None, **matching.crossing(t, now)}
        selected = {d["_id"] async for d in orders.find(query, {"_id": 1})}
        # Stored documents come back with naive datetimes.
        expected = {
            d["_id"]
            for d in docs
            if acts_on({**d, "expires_at": d["expires_at"] or now + timedelta(1)}, t, now)
        }
        assert selected == expected
        assert 0 < len(selected) < len(docs)
    finally:
        await orders.delete_many({"user_id": "matcher-test"})


async def test_a_tick_reads_only_the_orders_it_crosses(user_gql, services, commands):
    services.market.apply(tick("BTC", "100.00"))
    crossing = await placed(
        user_gql, symbol="BTC", side="BUY", type="LIMIT", quantity="0.1", limitPrice="99.00"
    )
    assert crossing["status"] == "OPEN"
    orders = OrderDocument.get_pymongo_collection()
    far = [
        resting("BTC", n, type="LIMIT", side="BUY", limit_price=Decimal128(Decimal(50 + n % 40)))
        for n in range(300)
    ] + [
        resting("BTC", n, type="STOP", side="SELL", stop_price=Decimal128(Decimal(10 + n % 40)))
        for n in range(100)
    ]
    await orders.insert_many(far)
    try:
        commands.only_this_task()
        commands.reset()
        await services.trading.match_tick(tick("BTC", "98.00"))  # the ask now reaches 99.00
        assert commands.returned.get("orders") == 1  # of 401 resting BTC orders
        got = await orders.find_one({"_id": crossing["id"]})
        assert got is not None and got["status"] == "FILLED"
        untouched = await orders.count_documents({"user_id": "matcher-test", "status": "OPEN"})
        assert untouched == len(far)
    finally:
        await orders.delete_many({"user_id": "matcher-test"})
    await books_are_clean(services)


async def test_the_store_filter_is_exact_at_boundary_prices(services):
    """Match keys order prices exactly at the edges: a price equal to the tick's, one
    price increment or 10^-18 away, up to 18 decimals; and a tick with more decimals
    than a key holds is floored, so the filter reads a superset (orders a key cannot
    tell apart from the price), never less than the rules act on."""
    symbol = "DOT"
    edge = Decimal("7.123456789012345678")  # 18 decimals: exact in a key
    t = Tick(symbol, edge, edge, edge, Decimal(1), datetime.now(UTC), "test")
    now = datetime.now(UTC)
    tiny, inc = Decimal("1e-18"), get_asset(symbol).price_increment
    near = [edge - inc, edge - tiny, edge, edge + tiny, edge + inc]
    docs = []
    for side, price in itertools.product(Side, near):
        docs.append(
            resting(symbol, len(docs), type="LIMIT", side=side.value, limit_price=Decimal128(price))
        )
        docs.append(
            resting(symbol, len(docs), type="STOP", side=side.value, stop_price=Decimal128(price))
        )
    orders = OrderDocument.get_pymongo_collection()
    await orders.insert_many(docs)
    try:
        query = {"symbol": symbol, "status": "OPEN", "owner": None, **matching.crossing(t, now)}
        selected = {d["_id"] async for d in orders.find(query, {"_id": 1})}
        expected = {d["_id"] for d in docs if acts_on({**d, "expires_at": None}, t, now)}
        assert selected == expected and len(expected) == 12  # 3 of 5 for each kind
        # 19 decimals: between two keys. The tick's key is floored to the one of
        # `edge`, so the orders 10^-19 above it are read too (and not filled: the
        # matcher checks the Decimal).
        finer = edge + Decimal("1e-19")
        t2 = Tick(symbol, finer, finer, finer, Decimal(1), datetime.now(UTC), "test")
        query = {"symbol": symbol, "status": "OPEN", "owner": None, **matching.crossing(t2, now)}
        selected = {d["_id"] async for d in orders.find(query, {"_id": 1})}
        expected = {d["_id"] for d in docs if acts_on({**d, "expires_at": None}, t2, now)}
        assert expected < selected
        extra = [d for d in docs if d["_id"] in selected - expected]
        assert all(
            matching.price_key((d["limit_price"] or d["stop_price"]).to_decimal())
            == matching.price_key(edge)
            for d in extra
        )
    finally:
        await orders.delete_many({"user_id": "matcher-test"})


def test_price_keys_sort_as_the_prices_do():
    prices = sorted(
        {
            Decimal(p)
            for p in (
                "0.01",
                "0.1",
                "1",
                "9",
                "10",
                "99.99",
                "100",
                "91000.5",
                "999999999999.99",
                "1000000000000",
                "0.000000000000000001",
            )
        }
    )
    keys = [matching.price_key(p) for p in prices]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert {len(k) for k in keys} == {matching.KEY_DIGITS}
    # Monotone beyond the accepted range: clamped, never out of order.
    assert matching.price_key(Decimal("-1")) <= keys[0]
    assert matching.price_key(Decimal("1e20")) >= keys[-1]


async def test_a_keyless_open_order_is_still_matched(services):
    """An order placed before match keys (no migration run yet) is read on every tick."""
    symbol = "DOT"
    t = tick(symbol, "10.000")
    doc = resting(symbol, 0, type="LIMIT", side="BUY", limit_price=Decimal128(t.ask * 2))
    del doc["match_key"]
    orders = OrderDocument.get_pymongo_collection()
    await orders.insert_one(doc)
    try:
        query = {
            "symbol": symbol,
            "status": "OPEN",
            "owner": None,
            **matching.crossing(t, datetime.now(UTC)),
        }
        assert [d["_id"] async for d in orders.find(query, {"_id": 1})] == [doc["_id"]]
    finally:
        await orders.delete_many({"user_id": "matcher-test"})
