"""Trading figures for operators (the admin's `stats`): computed in the store, one
command per figure, run together; no order or trade document travels to the app.

`openOrders` counts through the (symbol, status) index, every catalogue symbol named
(orders are only placed on catalogue symbols). The 24-hour figures filter on
`created_at`, which no index leads: the store reads every order and trade to answer
them. An admin view run now and then can afford that; an index on `created_at` would
make them proportional to a day's activity at the price of one more index write per
order and trade (DESIGN.md: measure that on the embedded engine first)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from cryptovault.documents.common import to_decimal
from cryptovault.documents.enums import OPEN_STATUSES
from cryptovault.documents.trading import OrderDocument, TradeDocument
from cryptovault.market.assets import ASSETS

DAY = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class TradingStats:
    orders_24h: int  # orders placed (any outcome)
    trades_24h: int  # fills
    trade_volume_24h: Decimal  # USD: sum of quantity x price of those fills
    open_orders: int  # OPEN or PARTIALLY_FILLED now


async def trading_stats(now: datetime) -> TradingStats:
    since = now - DAY
    orders = OrderDocument.get_pymongo_collection()
    trades = TradeDocument.get_pymongo_collection()

    async def fills() -> tuple[int, Decimal]:
        cursor = await trades.aggregate(
            [
                {"$match": {"created_at": {"$gte": since}}},
                {
                    "$group": {
                        "_id": None,
                        "count": {"$sum": 1},
                        "volume": {"$sum": {"$multiply": ["$quantity", "$price"]}},
                    }
                },
            ]
        )
        found = await cursor.to_list(1)
        if not found:
            return 0, Decimal(0)
        return int(found[0]["count"]), to_decimal(found[0]["volume"])

    placed, (count, volume), open_orders = await asyncio.gather(
        orders.count_documents({"created_at": {"$gte": since}}),
        fills(),
        orders.count_documents(
            {"symbol": {"$in": sorted(ASSETS)}, "status": {"$in": [s.value for s in OPEN_STATUSES]}}
        ),
    )
    return TradingStats(
        orders_24h=placed,
        trades_24h=count,
        trade_volume_24h=volume.quantize(Decimal("0.01")),
        open_orders=open_orders,
    )
