"""Trading resolvers: parse, authorize (owner checks), call the engine, map to types.
Lists load related data through per-request DataLoaders."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from beanie import SortDirection
from strawberry.dataloader import DataLoader

from cryptovault.documents.common import older_than
from cryptovault.documents.trading import (
    BalanceDocument,
    LedgerEntryDocument,
    OrderDocument,
    TradeDocument,
)
from cryptovault.errors import BadUserInput
from cryptovault.market.assets import get_asset
from cryptovault.schema import trading as types
from cryptovault.schema.pagination import (
    Connection,
    check_page_size,
    connection,
    decode_time_cursor,
    encode_time_cursor,
    items_before,
)
from cryptovault.schema.permissions import require_viewer
from cryptovault.security.viewer import while_valid
from cryptovault.trading.engine import orders_topic
from cryptovault.trading.ledger import RESERVATION_KINDS, USD
from cryptovault.trading.reconcile import reconcile
from cryptovault.trading.rules import OrderRequest

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info

MAX_PAGE = 200  # schema.trading.MAX_PAGE (declared there for the cost rules)


def to_balance(doc: BalanceDocument) -> types.Balance:
    return types.Balance(
        asset=doc.asset, available=doc.available, held=doc.held, total=doc.available + doc.held
    )


def to_entry(doc: LedgerEntryDocument) -> types.LedgerEntry:
    return types.LedgerEntry(
        id=doc.id,  # type: ignore[arg-type]
        txn_id=doc.txn_id,
        asset=doc.asset,
        amount=doc.amount,
        balance_after=doc.balance_after,
        kind=doc.kind,
        type=types.LedgerEntryType(doc.kind),
        order_id=doc.order_id,  # type: ignore[arg-type]
        trade_id=doc.trade_id,  # type: ignore[arg-type]
        created_at=doc.created_at,
    )


def to_trade(doc: TradeDocument) -> types.Trade:
    return types.Trade(
        id=doc.id,  # type: ignore[arg-type]
        order_id=doc.order_id,  # type: ignore[arg-type]
        symbol=doc.symbol,
        side=doc.side,
        quantity=doc.quantity,
        price=doc.price,
        fee=doc.fee,
        liquidity=doc.liquidity,
        created_at=doc.created_at,
    )


def to_order(doc: OrderDocument) -> types.Order:
    average = doc.spent_quote / doc.filled_quantity if doc.filled_quantity else None
    if average is not None:
        average = average.quantize(get_asset(doc.symbol).price_increment / 10_000).normalize()
    return types.Order(
        id=doc.id,  # type: ignore[arg-type]
        client_order_id=doc.client_order_id,
        symbol=doc.symbol,
        side=doc.side,
        type=doc.type,
        time_in_force=doc.time_in_force,
        status=doc.status,
        quantity=doc.quantity,
        quote_quantity=doc.quote_quantity,
        limit_price=doc.limit_price,
        stop_price=doc.stop_price,
        expires_at=doc.expires_at,
        triggered=doc.triggered,
        filled_quantity=doc.filled_quantity,
        average_fill_price=average,
        fees=doc.fees,
        held_asset=doc.hold_asset,
        held_amount=doc.hold_remaining,
        reject_reason=doc.reject_reason,
        cancel_requested=doc.close_request is not None,
        history=[
            types.OrderEvent(status=h["status"], type=types.OrderEventType(h["status"]), at=h["at"])
            for h in doc.history
        ],
        created_at=doc.created_at,
        updated_at=doc.updated_at,
    )


# -- loaders (one per request: context.state) ------------------------------------------


def _loader(info: Info, name: str, load) -> DataLoader:
    loaders = info.context.state.setdefault("loaders", {})
    if name not in loaders:
        loaders[name] = DataLoader(load_fn=load)
    return loaders[name]


async def _trades_by_order(order_ids: list[str]) -> list[list[TradeDocument]]:
    found = await TradeDocument.find({"order_id": {"$in": order_ids}}).to_list()
    grouped: dict[str, list[TradeDocument]] = defaultdict(list)
    for t in sorted(found, key=lambda t: (t.created_at, t.id)):
        grouped[t.order_id].append(t)
    return [grouped.get(i, []) for i in order_ids]


async def _entries_by_trade(trade_ids: list[str]) -> list[list[LedgerEntryDocument]]:
    found = await LedgerEntryDocument.find({"trade_id": {"$in": trade_ids}}).to_list()
    grouped: dict[str, list[LedgerEntryDocument]] = defaultdict(list)
    for e in sorted(found, key=lambda e: e.id):
        grouped[e.trade_id or ""].append(e)
    return [grouped.get(i, []) for i in trade_ids]


async def trades_of_order(info: Info, order_id: str) -> list[types.Trade]:
    found = await _loader(info, "trades_by_order", _trades_by_order).load(order_id)
    return [to_trade(t) for t in found]


async def entries_of_trade(info: Info, trade_id: str) -> list[types.LedgerEntry]:
    viewer = require_viewer(info)
    found = await _loader(info, "entries_by_trade", _entries_by_trade).load(trade_id)
    # A trade's legs include the house's; a user sees only their own entries.
    return [to_entry(e) for e in found if e.account == viewer.user_id]


# -- queries ---------------------------------------------------------------------------


async def account(info: Info) -> types.Account:
    viewer = require_viewer(info)
    engine = info.context.services.trading
    await engine.ensure_account(viewer.user_id)
    balances = (
        await BalanceDocument.find({"account": viewer.user_id})
        .sort([("asset", SortDirection.ASCENDING)])
        .to_list()
    )
    return types.Account(balances=[to_balance(b) for b in balances])


def _page_query(base: dict[str, Any], after: tuple[datetime, str] | None) -> dict[str, Any]:
    if after is None:
        return base
    return {"$and": [base, older_than(after)]}


async def _page(model, query: dict[str, Any], first: int) -> tuple[list[Any], bool]:
    found = (
        await model.find(query)
        .sort([("created_at", SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)])
        .limit(first + 1)
        .to_list()
    )
    return found[:first], len(found) > first


async def _time_page(
    model, kind: str, base: dict[str, Any], first: int, after: str | None, to_node
) -> Connection:
    """A newest-first page of `model` documents matching `base`, after a cursor."""
    position = decode_time_cursor(kind, after) if after is not None else None
    found, more = await _page(model, _page_query(base, position), first)

    async def newest() -> tuple[datetime, str] | None:
        top, _ = await _page(model, base, 1)
        return (top[0].created_at, top[0].id) if top else None

    return connection(
        found,
        lambda d: encode_time_cursor(kind, d.created_at, d.id),
        to_node,
        has_next=more,
        has_previous=await items_before(position, newest),
    )


async def orders(
    info: Info,
    first: int | None,
    after: str | None,
    status: list[types.OrderStatus] | None,
    symbol: str | None,
) -> Connection[types.Order]:
    viewer = require_viewer(info)
    size = check_page_size(first, 50, MAX_PAGE)
    base: dict[str, Any] = {"user_id": viewer.user_id}
    if status is not None:
        if not status:
            raise BadUserInput("status must not be empty (omit it for every status)")
        base["status"] = {"$in": [s.value for s in status]}
    if symbol is not None:
        base["symbol"] = get_asset(symbol).symbol
    return await _time_page(OrderDocument, "order", base, size, after, to_order)


async def order(info: Info, order_id: str) -> types.Order | None:
    viewer = require_viewer(info)
    # Another user's order is simply not found.
    doc = await OrderDocument.find_one({"_id": order_id, "user_id": viewer.user_id})
    return to_order(doc) if doc else None


async def trades(
    info: Info, first: int | None, after: str | None, symbol: str | None
) -> Connection[types.Trade]:
    viewer = require_viewer(info)
    size = check_page_size(first, 50, MAX_PAGE)
    base: dict[str, Any] = {"user_id": viewer.user_id}
    if symbol is not None:
        base["symbol"] = get_asset(symbol).symbol
    return await _time_page(TradeDocument, "trade", base, size, after, to_trade)


async def ledger(
    info: Info, first: int | None, after: str | None, asset: str | None
) -> Connection[types.LedgerEntry]:
    viewer = require_viewer(info)
    size = check_page_size(first, 50, MAX_PAGE)
    # Holds and releases move money within a balance (Order.heldAmount shows them):
    # the ledger a user reads is what the account gained and lost.
    base: dict[str, Any] = {"account": viewer.user_id, "kind": {"$nin": list(RESERVATION_KINDS)}}
    if asset is not None:
        base["asset"] = USD if asset.strip().upper() == USD else get_asset(asset).symbol
    return await _time_page(LedgerEntryDocument, "ledger", base, size, after, to_entry)


async def reconciliation(info: Info) -> types.Reconciliation:
    report = await reconcile(info.context.services.store.db)
    return types.Reconciliation(
        ok=report.ok,
        trial_balance=[types.AssetTotal(asset=a, total=t) for a, t in report.trial_balance.items()],
        discrepancies=report.discrepancies,
        checked_balances=report.checked_balances,
        checked_orders=report.checked_orders,
    )


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


async def place_order(info: Info, data: types.PlaceOrderInput) -> types.Order:
    viewer = require_viewer(info)
    request = OrderRequest(
        symbol=data.symbol,
        side=data.side,
        type=data.type,
        quantity=data.quantity,
        quote_quantity=data.quote_quantity,
        limit_price=data.limit_price,
        stop_price=data.stop_price,
        time_in_force=data.time_in_force,
        expires_at=data.expires_at,
        client_order_id=data.client_order_id,
    )
    doc = await _to_completion(
        info.context.services.trading.place(viewer, request, info.context.origin)
    )
    return to_order(doc)


async def cancel_order(info: Info, order_id: str) -> types.Order:
    viewer = require_viewer(info)
    return to_order(
        await _to_completion(
            info.context.services.trading.cancel(viewer, order_id, info.context.origin)
        )
    )


async def adjust_balance(info: Info, data: types.AdjustBalanceInput) -> types.Balance:
    viewer = require_viewer(info)
    services = info.context.services
    user_id = str(data.user_id)
    await services.admin.get_user(user_id)  # NOT_FOUND for unknown users
    asset = await _to_completion(
        services.trading.adjust_balance(
            viewer,
            user_id,
            data.asset.strip().upper(),
            data.amount,
            data.reason,
            info.context.origin,
            data.idempotency_key,
        )
    )
    doc = await BalanceDocument.get(f"{user_id}:{asset}")
    if doc is None:  # pragma: no cover - the adjustment just created it
        return types.Balance(asset=asset, available=Decimal(0), held=Decimal(0), total=Decimal(0))
    return to_balance(doc)


# -- subscription ----------------------------------------------------------------------


async def order_stream(info: Info) -> AsyncIterator[types.Order]:
    viewer = require_viewer(info)
    with info.context.services.hub.subscribe(orders_topic(viewer.user_id), maxsize=256) as sub:
        async for doc in while_valid(viewer, sub):
            yield to_order(doc)
