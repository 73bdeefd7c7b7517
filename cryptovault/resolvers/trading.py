"""Trading resolvers: parse, authorize (owner checks), call the engine or the trading
queries, and return documents (schema/trading.py maps them). Related data loads
through the named DataLoaders (resolvers/loaders.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cryptovault.documents.enums import OrderStatus
from cryptovault.documents.trading import (
    BalanceDocument,
    LedgerEntryDocument,
    OrderDocument,
    TradeDocument,
)
from cryptovault.paging import Page
from cryptovault.resolvers.access import require_viewer
from cryptovault.resolvers.loaders import LedgerEntriesByTradeIdLoader, TradesByOrderIdLoader
from cryptovault.security.viewer import while_valid
from cryptovault.trading import queries
from cryptovault.trading.engine import orders_topic
from cryptovault.trading.reconcile import Report, reconcile
from cryptovault.trading.rules import OrderRequest

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


async def trades_of_order(info: Info, order_id: str) -> list[TradeDocument]:
    return await TradesByOrderIdLoader.of(info).load(order_id)


async def entries_of_trade(info: Info, trade_id: str) -> list[LedgerEntryDocument]:
    viewer = require_viewer(info)
    found = await LedgerEntriesByTradeIdLoader.of(info).load(trade_id)
    # A trade's legs include the house's; a user sees only their own entries.
    return [e for e in found if e.account == viewer.user_id]


# -- queries ---------------------------------------------------------------------------


async def account(info: Info) -> list[BalanceDocument]:
    viewer = require_viewer(info)
    await info.context.services.trading.ensure_account(viewer.user_id)
    return await queries.balances(viewer.user_id)


async def orders(
    info: Info,
    first: int | None,
    after: str | None,
    status: Iterable[OrderStatus] | None,
    symbol: str | None,
) -> Page[OrderDocument]:
    viewer = require_viewer(info)
    return await queries.orders_page(viewer.user_id, first, after, status, symbol)


async def order(info: Info, order_id: str) -> OrderDocument | None:
    viewer = require_viewer(info)
    return await queries.order(viewer.user_id, order_id)


async def trades(
    info: Info, first: int | None, after: str | None, symbol: str | None
) -> Page[TradeDocument]:
    viewer = require_viewer(info)
    return await queries.trades_page(viewer.user_id, first, after, symbol)


async def ledger(
    info: Info, first: int | None, after: str | None, asset: str | None
) -> Page[LedgerEntryDocument]:
    viewer = require_viewer(info)
    return await queries.ledger_page(viewer.user_id, first, after, asset)


async def reconciliation(info: Info) -> Report:
    return await reconcile(info.context.services.store.db)


# -- mutations -------------------------------------------------------------------------


async def _to_completion[T](work: Coroutine[Any, Any, T]) -> T:
    """Run a money operation to its end and answer with its outcome, even past the
    request's time limit (e.g. a process that was paused wakes up late): the work goes
    on anyway (cutting it half-way would leave it to the recovery sweep), so an error
    would only hide whether the order was placed. A second cancellation (the client
    gone, a shutdown) ends the request; the work still finishes."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling() == 1:
            current.uncancel()  # the time limit: answer when the work is done
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                pass
        _running.add(task)
        task.add_done_callback(_running.discard)
        raise


_running: set[asyncio.Future[Any]] = set()


async def place_order(info: Info, request: OrderRequest) -> OrderDocument:
    viewer = require_viewer(info)
    return await _to_completion(
        info.context.services.trading.place(viewer, request, info.context.origin)
    )


async def cancel_order(info: Info, order_id: str) -> OrderDocument:
    viewer = require_viewer(info)
    return await _to_completion(
        info.context.services.trading.cancel(viewer, order_id, info.context.origin)
    )


async def adjust_balance(
    info: Info,
    user_id: str,
    asset: str,
    amount: Decimal,
    reason: str,
    idempotency_key: str | None,
) -> BalanceDocument:
    viewer = require_viewer(info)
    services = info.context.services
    await services.admin.get_user(user_id)  # NOT_FOUND for unknown users
    adjusted = await _to_completion(
        services.trading.adjust_balance(
            viewer,
            user_id,
            asset.strip().upper(),
            amount,
            reason,
            info.context.origin,
            idempotency_key,
        )
    )
    doc = await queries.balance(user_id, adjusted)
    if doc is None:  # pragma: no cover - the adjustment just created it
        return BalanceDocument(id=f"{user_id}:{adjusted}", account=user_id, asset=adjusted)
    return doc


# -- subscription ----------------------------------------------------------------------


async def order_stream(info: Info) -> AsyncIterator[OrderDocument]:
    viewer = require_viewer(info)
    with info.context.services.hub.subscribe(orders_topic(viewer.user_id), maxsize=256) as sub:
        async for event in while_valid(viewer, sub):
            yield event.order
