"""What the trading API reads: a user's balances, orders, trades and ledger, pages of
them (cryptovault/paging.py) and the batched reads behind the DataLoaders
(resolvers/loaders.py). Read-only: every write goes through the engine."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from beanie import SortDirection

from cryptovault.documents.enums import OrderStatus
from cryptovault.documents.trading import (
    BalanceDocument,
    LedgerEntryDocument,
    OrderDocument,
    TradeDocument,
)
from cryptovault.market.assets import get_asset
from cryptovault.paging import Listing, Page, in_statuses, page
from cryptovault.trading.ledger import RESERVATION_KINDS, USD

ORDERS = Listing("order", default=50, maximum=200)
TRADES = Listing("trade", default=50, maximum=200)
LEDGER = Listing("ledger", default=50, maximum=200)
# A holding's trades: the same list as TRADES (the same cursors), a smaller first page.
HOLDING_TRADES = Listing("trade", default=20, maximum=TRADES.maximum)


async def balances(user_id: str) -> list[BalanceDocument]:
    return (
        await BalanceDocument.find({"account": user_id})
        .sort([("asset", SortDirection.ASCENDING)])
        .to_list()
    )


async def balance(user_id: str, asset: str) -> BalanceDocument | None:
    return await BalanceDocument.get(f"{user_id}:{asset}")


async def order(user_id: str, order_id: str) -> OrderDocument | None:
    """The user's order; another user's is simply not found."""
    return await OrderDocument.find_one({"_id": order_id, "user_id": user_id})


async def orders_page(
    user_id: str,
    first: int | None,
    after: str | None,
    statuses: Iterable[OrderStatus] | None = None,
    symbol: str | None = None,
) -> Page[OrderDocument]:
    first = ORDERS.size(first)  # BAD_USER_INPUT for `first` before the filters'
    base: dict[str, Any] = {"user_id": user_id, **in_statuses(statuses)}
    if symbol is not None:
        base["symbol"] = get_asset(symbol).symbol
    return await page(OrderDocument, ORDERS, base, first, after)


async def trades_page(
    user_id: str, first: int | None, after: str | None, symbol: str | None = None
) -> Page[TradeDocument]:
    base: dict[str, Any] = {"user_id": user_id}
    if symbol is not None:
        base["symbol"] = get_asset(symbol).symbol
    return await page(TradeDocument, TRADES, base, first, after)


async def ledger_page(
    user_id: str, first: int | None, after: str | None, asset: str | None = None
) -> Page[LedgerEntryDocument]:
    # Holds and releases move money within a balance (Order.heldAmount shows them):
    # the ledger a user reads is what the account gained and lost.
    base: dict[str, Any] = {"account": user_id, "kind": {"$nin": list(RESERVATION_KINDS)}}
    if asset is not None:
        base["asset"] = USD if asset.strip().upper() == USD else get_asset(asset).symbol
    return await page(LedgerEntryDocument, LEDGER, base, first, after)


# -- batched reads (one store read for many keys) --------------------------------------


async def trades_by_order(order_ids: list[str]) -> list[list[TradeDocument]]:
    """Each order's trades, oldest first."""
    found = await TradeDocument.find({"order_id": {"$in": order_ids}}).to_list()
    grouped: dict[str, list[TradeDocument]] = defaultdict(list)
    for t in sorted(found, key=lambda t: (t.created_at, t.id)):
        grouped[t.order_id].append(t)
    return [grouped.get(i, []) for i in order_ids]


async def entries_by_trade(trade_ids: list[str]) -> list[list[LedgerEntryDocument]]:
    """Each trade's ledger entries (every account's legs), in id order."""
    found = await LedgerEntryDocument.find({"trade_id": {"$in": trade_ids}}).to_list()
    grouped: dict[str, list[LedgerEntryDocument]] = defaultdict(list)
    for e in sorted(found, key=lambda e: e.id):
        grouped[e.trade_id or ""].append(e)
    return [grouped.get(i, []) for i in trade_ids]


async def first_trade_pages(
    user_id: str, size: int, symbols: list[str]
) -> list[Page[TradeDocument]]:
    """The first page (newest `size` trades) of each symbol's trades, in one read."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"user_id": user_id, "symbol": {"$in": symbols}}},
        {
            "$setWindowFields": {
                "partitionBy": "$symbol",
                "sortBy": {"created_at": -1, "_id": -1},
                "output": {"rank": {"$documentNumber": {}}},
            }
        },
        {"$match": {"rank": {"$lte": size + 1}}},
        {"$sort": {"symbol": 1, "rank": 1}},
    ]
    pages: dict[str, list[TradeDocument]] = {s: [] for s in symbols}
    cursor = await TradeDocument.get_pymongo_collection().aggregate(pipeline)
    async for raw in cursor:
        raw.pop("rank", None)
        pages[raw["symbol"]].append(TradeDocument.model_validate(raw))
    return [
        Page(
            items=pages[s][:size],
            has_next=len(pages[s]) > size,
            has_previous=False,  # a first page: nothing before it
            cursor_of=TRADES.cursor_of,
        )
        for s in symbols
    ]
