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
    now = datetime.now(UTC)
    return {
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
