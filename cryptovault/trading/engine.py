"""The trading engine: places, fills, cancels and expires orders.

Fills come only from the price feed: market orders take the current ask (buy) or bid
(sell); resting limit orders fill when a tick crosses them, at the limit or better;
stops trigger on the last price. Every state change of an order is a conditional
update, so a fill happens once even with several instances; a fill is first claimed
on the order (its journal), then its ledger legs are posted (idempotently) and the
order completed, and the recovery sweep finishes whatever a crash cut short."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from bson import Decimal128
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from cryptovault.config import Settings
from cryptovault.documents.common import new_id, now_ms, to_decimal
from cryptovault.documents.trading import OrderDocument, TradeDocument
from cryptovault.errors import BadUserInput, Conflict, NotFound
from cryptovault.events.bus import EventBus
from cryptovault.events.hub import Hub
from cryptovault.market.assets import Asset, get_asset
from cryptovault.market.service import TICKS_CHANNEL, MarketService
from cryptovault.market.ticks import Tick
from cryptovault.observability.metrics import Metrics
from cryptovault.security.audit import AuditLog
from cryptovault.security.origin import SYSTEM, Origin
from cryptovault.security.viewer import Viewer
from cryptovault.trading.ledger import HOUSE_FEES, HOUSE_FUNDING, HOUSE_MARKET, USD, Ledger, Leg

log = logging.getLogger(__name__)

ORDERS_CHANNEL = "orders"
OPEN_STATUSES = ("OPEN", "PARTIALLY_FILLED")
TERMINAL = ("FILLED", "CANCELED", "REJECTED", "EXPIRED")
# Closed by a transition with a hold to release (FILLED closes in complete_fill).
RELEASING = ("CANCELED", "EXPIRED")
CENT = Decimal("0.01")
STALE_PENDING = timedelta(seconds=5)


def orders_topic(user_id: str) -> str:
    return f"orders:{user_id}"


def ceil_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_CEILING)


def floor_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_FLOOR)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    symbol: str
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT | STOP | STOP_LIMIT
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str = "GTC"
    expires_at: datetime | None = None
    client_order_id: str | None = None


# The largest quantity, price or USD amount an order or adjustment may name, and the
# largest order value: far beyond any paper account, and small enough that every
# amount derived from them (holds, fees, totals) stays exact in 28-digit Decimal
# arithmetic and in Decimal128 (beyond it, Decimal raises instead of answering).
MAX_AMOUNT = Decimal("1e12")
MAX_NOTIONAL = Decimal("1e15")


def _multiple(value: Decimal, step: Decimal, field: str) -> None:
    if value <= 0:
        raise BadUserInput(f"{field} must be positive", field=field)
    if value > MAX_AMOUNT:
        raise BadUserInput(f"{field} must be at most {MAX_AMOUNT:,.0f}", field=field)
    if value % step != 0:
        raise BadUserInput(
            f"{field} must be a multiple of {step}", field=field, increment=str(step)
        )


class TradingEngine:
    def __init__(
        self,
        settings: Settings,
        market: MarketService,
        bus: EventBus,
        hub: Hub,
        audit: AuditLog,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.market = market
        self.bus = bus
        self.hub = hub
        self.audit = audit
        self.metrics = metrics
        self.ledger = Ledger()
        self.orders = OrderDocument.get_pymongo_collection()
        self.trades = TradeDocument.get_pymongo_collection()
        self._funded: set[str] = set()
        # Liquidity left at the top of the book for the latest tick of each symbol.
        self._book: dict[str, tuple[datetime, Decimal]] = {}
        self._symbol_locks: dict[str, asyncio.Lock] = {}
        self._pending_ticks: dict[str, Tick] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._closing = False
        self._sweeper: asyncio.Task[None] | None = None
        bus.subscribe(ORDERS_CHANNEL, self._on_order_event)
        bus.subscribe(TICKS_CHANNEL, self._on_tick)

    # -- accounts --------------------------------------------------------------------

    async def ensure_account(self, user_id: str) -> None:
        """Open a user's paper account on first touch: the starting balance is
        credited once, through the ledger, whatever the concurrency."""
        if user_id in self._funded:
            return
        txn = f"funding:{user_id}"
        if not await self.ledger.written(f"{txn}:0"):
            amount = self.settings.starting_balance_usd
            if amount > 0:
                await self.ledger.post(
                    txn,
                    [
                        Leg(user_id, USD, amount, "funding"),
                        Leg(HOUSE_FUNDING, USD, -amount, "funding"),
                    ],
                )
        self._funded.add(user_id)

    async def adjust_balance(
        self, actor: Viewer, user_id: str, asset: str, amount: Decimal, reason: str, origin: Origin
    ) -> None:
        """An admin credit (or debit, if funds are available) of paper money."""
        if asset != USD:
            asset = get_asset(asset).symbol
        if amount == 0 or not amount.is_finite():
            raise BadUserInput("amount must be a non-zero number", field="amount")
        step = CENT if asset == USD else get_asset(asset).quantity_increment
        _multiple(abs(amount), step, "amount")
        if not reason.strip() or len(reason) > 500:
            raise BadUserInput("Give a reason (at most 500 characters)", field="reason")
        await self.ensure_account(user_id)
        txn = f"adjustment:{new_id()}"
        await self.ledger.post(
            txn,
            [
                Leg(user_id, asset, amount, "adjustment"),
                Leg(HOUSE_FUNDING, asset, -amount, "adjustment"),
            ],
        )
        await self.audit.record(
            "admin.balance_adjusted",
            actor=actor,
            user_id=user_id,
            target=f"ledger:{txn}",
            origin=origin,
            details={"asset": asset, "amount": amount, "reason": reason.strip()},
        )

    # -- placing ---------------------------------------------------------------------

    def _validate(self, req: OrderRequest) -> tuple[Asset, Tick | None]:
        asset = get_asset(req.symbol)
        if (req.quantity is None) == (req.quote_quantity is None):
            raise BadUserInput("Give exactly one of quantity and quoteQuantity", field="quantity")
        if req.quote_quantity is not None:
            if not (req.type == "MARKET" and req.side == "BUY"):
                raise BadUserInput("quoteQuantity is only for market buys", field="quoteQuantity")
            _multiple(req.quote_quantity, CENT, "quoteQuantity")
        if req.quantity is not None:
            _multiple(req.quantity, asset.quantity_increment, "quantity")
            if req.quantity < asset.min_size:
                raise BadUserInput(
                    f"quantity is below the minimum size {asset.min_size}", field="quantity"
                )
        needs_limit = req.type in ("LIMIT", "STOP_LIMIT")
        needs_stop = req.type in ("STOP", "STOP_LIMIT")
        if needs_limit != (req.limit_price is not None):
            raise BadUserInput(
                f"limitPrice is {'required' if needs_limit else 'not allowed'} for {req.type}",
                field="limitPrice",
            )
        if needs_stop != (req.stop_price is not None):
            raise BadUserInput(
                f"stopPrice is {'required' if needs_stop else 'not allowed'} for {req.type}",
                field="stopPrice",
            )
        for name, price in (("limitPrice", req.limit_price), ("stopPrice", req.stop_price)):
            if price is not None:
                _multiple(price, asset.price_increment, name)
        if req.time_in_force == "GTD":
            if req.expires_at is None or req.expires_at <= datetime.now(UTC):
                raise BadUserInput("GTD orders need an expiresAt in the future", field="expiresAt")
        elif req.expires_at is not None:
            raise BadUserInput("expiresAt is only for GTD orders", field="expiresAt")
        if req.time_in_force in ("IOC", "FOK") and req.type not in ("MARKET", "LIMIT"):
            raise BadUserInput(f"{req.time_in_force} is for market and limit orders")
        if req.client_order_id is not None and not 1 <= len(req.client_order_id) <= 64:
            raise BadUserInput("clientOrderId must be 1 to 64 characters", field="clientOrderId")
        quote = self.market.quote(asset.symbol)
        tick = quote.tick if quote else None
        if tick is None and req.type == "MARKET":
            raise BadUserInput(f"No price for {asset.symbol} yet: try again shortly")
        reference = req.limit_price or req.stop_price or (tick.price if tick else None)
        if reference is not None:
            notional = req.quote_quantity or (req.quantity or Decimal(0)) * reference
            if notional > MAX_NOTIONAL:
                raise BadUserInput(
                    f"order value is above the maximum of {MAX_NOTIONAL:,.0f} USD",
                    field="quantity",
                )
            if notional < asset.min_notional:
                raise BadUserInput(
                    f"order value is below the minimum of {asset.min_notional} USD",
                    field="quantity",
                )
        return asset, tick

    def _hold_for(self, req: OrderRequest, asset: Asset, tick: Tick | None) -> tuple[str, Decimal]:
        if req.side == "SELL":
            assert req.quantity is not None
            return asset.symbol, req.quantity
        if req.quote_quantity is not None:
            return USD, req.quote_quantity
        assert req.quantity is not None
        fee = Decimal(1) + max(self.settings.taker_fee_rate, self.settings.maker_fee_rate)
        if req.type in ("LIMIT", "STOP_LIMIT"):
            assert req.limit_price is not None
            return USD, ceil_cents(req.quantity * req.limit_price * fee)
        price = req.stop_price if req.type == "STOP" else tick.ask  # type: ignore[union-attr]
        assert price is not None
        return USD, ceil_cents(req.quantity * price * (1 + self.settings.market_slippage) * fee)

    async def place(self, viewer: Viewer, req: OrderRequest, origin: Origin) -> OrderDocument:
        asset, tick = self._validate(req)
        user_id = viewer.user_id
        await self.ensure_account(user_id)
        hold_asset, hold = self._hold_for(req, asset, tick)
        now = now_ms()
        order = OrderDocument(
            user_id=user_id,
            client_order_id=req.client_order_id,
            idempotency_key="",
            symbol=asset.symbol,
            side=req.side,
            type=req.type,
            time_in_force=req.time_in_force,
            quantity=req.quantity,
            quote_quantity=req.quote_quantity,
            limit_price=req.limit_price,
            stop_price=req.stop_price,
            expires_at=req.expires_at,
            hold_asset=hold_asset,
            hold_remaining=hold,
            history=[{"status": "PENDING", "at": now}],
            created_at=now,
            updated_at=now,
        )
        order.idempotency_key = (
            f"{user_id}:{req.client_order_id}" if req.client_order_id else f"order:{order.id}"
        )
        try:
            await order.insert()
        except DuplicateKeyError:
            existing = await OrderDocument.find_one({"idempotency_key": order.idempotency_key})
            if existing is None:  # pragma: no cover - removed between insert and read
                raise Conflict("An order with this clientOrderId is being placed") from None
            return existing
        try:
            await self.ledger.hold(f"hold:{order.id}", user_id, hold_asset, hold)
        except BaseException:
            # Nothing was reserved: the order never existed.
            await self.orders.delete_one({"_id": order.id, "status": "PENDING"})
            raise
        doc = await self._transition(order.id, ("PENDING",), "OPEN")
        assert doc is not None
        if self.metrics is not None:
            self.metrics.order_placed(req.side, req.type)
        await self.audit.record(
            "order.placed",
            actor=viewer,
            target=f"order:{order.id}",
            origin=origin,
            details={
                "symbol": asset.symbol,
                "side": req.side,
                "type": req.type,
                "quantity": req.quantity,
                "quoteQuantity": req.quote_quantity,
                "limitPrice": req.limit_price,
                "stopPrice": req.stop_price,
            },
        )
        await self._publish(doc)
        doc = await self._execute_on_placement(doc, tick)
        return OrderDocument.model_validate(doc)

    async def _execute_on_placement(self, doc: dict[str, Any], tick: Tick | None) -> dict[str, Any]:
        tif = doc["time_in_force"]
        if tick is not None and doc["type"] in ("MARKET", "LIMIT"):
            if tif == "FOK" and not self._can_fill_fully(doc, tick):
                return await self._close(doc, "CANCELED", reason="FOK: not fully fillable now")
            doc = await self._match(doc, tick, liquidity="TAKER")
        elif tick is not None and doc["type"] in ("STOP", "STOP_LIMIT"):
            doc = await self._maybe_trigger(doc, tick)
        if tif in ("IOC", "FOK") and doc["status"] in OPEN_STATUSES:
            doc = await self._close(doc, "CANCELED", reason=f"{tif}: remainder canceled")
        return doc

    # -- matching --------------------------------------------------------------------

    def _remaining(self, doc: dict[str, Any]) -> Decimal:
        if doc.get("quantity") is not None:
            return to_decimal(doc["quantity"]) - to_decimal(doc["filled_quantity"])
        return to_decimal(doc["hold_remaining"])  # a quote-quantity buy: USD left to spend

    def _liquidity(self, tick: Tick) -> Decimal:
        """Base units still offered at the top of the book for this tick."""
        seen = self._book.get(tick.symbol)
        if seen is None or seen[0] != tick.timestamp:
            size = get_asset(tick.symbol).floor_quantity(self.settings.top_of_book_usd / tick.price)
            self._book[tick.symbol] = (tick.timestamp, size)
            return size
        return seen[1]

    def _take_liquidity(self, tick: Tick, quantity: Decimal) -> None:
        ts, size = self._book[tick.symbol]
        self._book[tick.symbol] = (ts, size - quantity)

    def _execution_price(self, doc: dict[str, Any], tick: Tick) -> Decimal | None:
        """The price this tick fills the order at, or None if it does not cross."""
        buy = doc["side"] == "BUY"
        market_price = tick.ask if buy else tick.bid
        kind = doc["type"]
        if kind in ("STOP", "STOP_LIMIT") and not doc.get("triggered"):
            return None
        if kind in ("MARKET", "STOP"):
            return market_price
        limit = to_decimal(doc["limit_price"])
        if (buy and market_price <= limit) or (not buy and market_price >= limit):
            return market_price  # the limit or better
        return None

    def _can_fill_fully(self, doc: dict[str, Any], tick: Tick) -> bool:
        price = self._execution_price(doc, tick)
        return price is not None and self._fill_size(doc, price, tick) >= self._remaining(doc)

    def _fill_size(self, doc: dict[str, Any], price: Decimal, tick: Tick) -> Decimal:
        asset = get_asset(doc["symbol"])
        available = self._liquidity(tick)
        if doc.get("quantity") is None:  # spend a USD amount, fee included
            rate = self.settings.taker_fee_rate
            wanted = asset.floor_quantity(to_decimal(doc["hold_remaining"]) / (price * (1 + rate)))
        else:
            wanted = self._remaining(doc)
            if doc["side"] == "BUY":
                # A market buy may meet a price above what it held for: fill what the
                # hold pays for.
                rate = max(self.settings.taker_fee_rate, self.settings.maker_fee_rate)
                affordable = asset.floor_quantity(
                    (to_decimal(doc["hold_remaining"]) - CENT) / (price * (1 + rate))
                )
                wanted = min(wanted, affordable)
        return max(Decimal(0), min(wanted, available))

    async def _match(self, doc: dict[str, Any], tick: Tick, liquidity: str) -> dict[str, Any]:
        price = self._execution_price(doc, tick)
        if price is None:
            return doc
        size = self._fill_size(doc, price, tick)
        if size <= 0:
            return doc
        self._take_liquidity(tick, size)
        return await self._fill(doc, size, price, liquidity)

    async def _maybe_trigger(self, doc: dict[str, Any], tick: Tick) -> dict[str, Any]:
        stop = to_decimal(doc["stop_price"])
        crossed = tick.price >= stop if doc["side"] == "BUY" else tick.price <= stop
        if not crossed:
            return doc
        now = now_ms()
        updated = await self.orders.find_one_and_update(
            {"_id": doc["_id"], "triggered": False, "status": {"$in": list(OPEN_STATUSES)}},
            {
                "$set": {"triggered": True, "updated_at": now},
                "$push": {"history": {"status": "TRIGGERED", "at": now}},
            },
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            return doc
        await self._publish(updated)
        return await self._match(updated, tick, liquidity="TAKER")

    async def _fill(
        self, doc: dict[str, Any], quantity: Decimal, price: Decimal, liquidity: str
    ) -> dict[str, Any]:
        rate = (
            self.settings.taker_fee_rate if liquidity == "TAKER" else self.settings.maker_fee_rate
        )
        notional = quantity * price
        fee = ceil_cents(notional * rate)
        n = doc["fills"]
        claim = {
            "n": n,
            "quantity": Decimal128(quantity),
            "price": Decimal128(price),
            "fee": Decimal128(fee),
            "liquidity": liquidity,
            "at": now_ms(),
        }
        claimed = await self.orders.find_one_and_update(
            {
                "_id": doc["_id"],
                "status": {"$in": list(OPEN_STATUSES)},
                "fills": n,
                "pending_fill": None,
            },
            {"$set": {"pending_fill": claim}},
            return_document=ReturnDocument.AFTER,
        )
        if claimed is None:
            return await self.orders.find_one({"_id": doc["_id"]}) or doc  # filled elsewhere
        return await self.complete_fill(claimed)

    async def complete_fill(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Post a claimed fill's legs, record the trade, update the order. Idempotent:
        the recovery sweep calls it for fills a crash interrupted."""
        pf = doc["pending_fill"]
        n = pf["n"]
        quantity, price, fee = (
            to_decimal(pf["quantity"]),
            to_decimal(pf["price"]),
            to_decimal(pf["fee"]),
        )
        order_id, user_id, symbol = doc["_id"], doc["user_id"], doc["symbol"]
        trade_id = f"{order_id}:{n}"
        notional = quantity * price
        if doc["side"] == "BUY":
            cost = ceil_cents(notional)
            legs = [
                Leg(user_id, USD, -(cost + fee), "trade", from_held=True),
                Leg(HOUSE_MARKET, USD, cost, "trade"),
                Leg(HOUSE_FEES, USD, fee, "fee"),
                Leg(user_id, symbol, quantity, "trade"),
                Leg(HOUSE_MARKET, symbol, -quantity, "trade"),
            ]
            held_used = cost + fee
        else:
            proceeds = floor_cents(notional)
            legs = [
                Leg(user_id, symbol, -quantity, "trade", from_held=True),
                Leg(HOUSE_MARKET, symbol, quantity, "trade"),
                Leg(user_id, USD, proceeds - fee, "trade"),
                Leg(HOUSE_MARKET, USD, -proceeds, "trade"),
                Leg(HOUSE_FEES, USD, fee, "fee"),
            ]
            held_used = quantity
        await self.ledger.post(
            f"fill:{trade_id}", legs, order_id=order_id, trade_id=trade_id, at=pf["at"]
        )
        with contextlib.suppress(DuplicateKeyError):
            await self.trades.insert_one(
                {
                    "_id": trade_id,
                    "order_id": order_id,
                    "user_id": user_id,
                    "symbol": symbol,
                    "side": doc["side"],
                    "quantity": Decimal128(quantity),
                    "price": Decimal128(price),
                    "fee": Decimal128(fee),
                    "liquidity": pf["liquidity"],
                    "created_at": pf["at"],
                }
            )
        filled = to_decimal(doc["filled_quantity"]) + quantity
        hold_left = to_decimal(doc["hold_remaining"]) - held_used
        done_fill = {**doc, "filled_quantity": filled, "hold_remaining": hold_left}
        remaining = self._remaining(done_fill)
        asset = get_asset(symbol)
        if doc.get("quantity") is not None:
            finished = remaining <= 0
        else:  # a quote-quantity buy is done when what is left cannot buy one increment
            finished = remaining < price * asset.quantity_increment * 2
        status = "FILLED" if finished else "PARTIALLY_FILLED"
        now = now_ms()
        updated = await self.orders.find_one_and_update(
            {"_id": order_id, "pending_fill.n": n},
            {
                "$set": {
                    "pending_fill": None,
                    "fills": n + 1,
                    "filled_quantity": Decimal128(filled),
                    "spent_quote": Decimal128(to_decimal(doc["spent_quote"]) + notional),
                    "fees": Decimal128(to_decimal(doc["fees"]) + fee),
                    "hold_remaining": Decimal128(hold_left),
                    "status": status,
                    "updated_at": now,
                    **({"release_due": now} if status == "FILLED" else {}),
                },
                "$push": {"history": {"status": status, "at": now}},
            },
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:  # completed by a concurrent recovery
            return await self.orders.find_one({"_id": order_id}) or doc
        if self.metrics is not None:
            self.metrics.order_filled(doc["side"])
        if status == "FILLED":
            updated = await self._release_hold(updated)
        await self._publish(updated)
        return updated

    async def _release_hold(self, doc: dict[str, Any]) -> dict[str, Any]:
        left = to_decimal(doc["hold_remaining"])
        if left > 0:
            await self.ledger.release(
                f"release:{doc['_id']}", doc["user_id"], doc["hold_asset"], left
            )
        return (
            await self.orders.find_one_and_update(
                {"_id": doc["_id"]},
                {"$set": {"hold_remaining": Decimal128(Decimal(0)), "release_due": None}},
                return_document=ReturnDocument.AFTER,
            )
            or doc
        )

    # -- state changes ---------------------------------------------------------------

    async def _transition(
        self, order_id: str, from_statuses: tuple[str, ...], status: str, reason: str | None = None
    ) -> dict[str, Any] | None:
        now = now_ms()
        fields: dict[str, Any] = {"status": status, "updated_at": now}
        if reason:
            fields["reject_reason"] = reason
        if status in RELEASING:
            fields["release_due"] = now  # cleared once what it holds is released
        elif status == "REJECTED":
            # Only an order cut off before its hold is rejected: it holds nothing.
            fields["hold_remaining"] = Decimal128(Decimal(0))
        return await self.orders.find_one_and_update(
            {"_id": order_id, "status": {"$in": list(from_statuses)}, "pending_fill": None},
            {"$set": fields, "$push": {"history": {"status": status, "at": now}}},
            return_document=ReturnDocument.AFTER,
        )

    async def _close(
        self, doc: dict[str, Any], status: str, reason: str | None = None
    ) -> dict[str, Any]:
        closed = await self._transition(doc["_id"], OPEN_STATUSES, status, reason)
        if closed is None:
            return await self.orders.find_one({"_id": doc["_id"]}) or doc
        closed = await self._release_hold(closed)
        await self._publish(closed)
        return closed

    async def cancel(self, viewer: Viewer, order_id: str, origin: Origin) -> OrderDocument:
        doc = await self.orders.find_one({"_id": order_id, "user_id": viewer.user_id})
        if doc is None:
            raise NotFound("No such order", id=order_id)
        if doc["status"] not in OPEN_STATUSES:
            raise Conflict(
                f"The order is {doc['status']}: only open orders can be canceled",
                status=doc["status"],
            )
        closed = await self._transition(order_id, OPEN_STATUSES, "CANCELED")
        if closed is None:
            current = await self.orders.find_one({"_id": order_id}) or doc
            raise Conflict(
                f"The order is {current['status']}: it changed while canceling; try again"
                if current["status"] in OPEN_STATUSES
                else f"The order is {current['status']}: only open orders can be canceled",
                status=current["status"],
            )
        closed = await self._release_hold(closed)
        await self._publish(closed)
        await self.audit.record(
            "order.canceled", actor=viewer, target=f"order:{order_id}", origin=origin
        )
        return OrderDocument.model_validate(closed)

    async def cancel_all(self, user_id: str, actor: Viewer, origin: Origin) -> int:
        """Cancel every open order of a user (e.g. when an admin freezes the account)."""
        canceled = 0
        async for doc in self.orders.find(
            {"user_id": user_id, "status": {"$in": list(OPEN_STATUSES)}}
        ):
            closed = await self._close(doc, "CANCELED", reason="account frozen")
            if closed.get("status") == "CANCELED":
                canceled += 1
                await self.audit.record(
                    "order.canceled",
                    actor=actor,
                    user_id=user_id,
                    target=f"order:{doc['_id']}",
                    origin=origin,
                    details={"reason": "account frozen"},
                )
        return canceled

    # -- ticks, expiry, recovery (leader) --------------------------------------------

    async def _on_tick(self, message: dict[str, Any]) -> None:
        """Queue the tick for matching without holding up the bus: each symbol keeps
        only its latest unprocessed tick, matched by one worker at a time."""
        if not self.market.is_leader or self._closing:
            return
        tick = Tick.from_message(message)
        first = tick.symbol not in self._pending_ticks
        self._pending_ticks[tick.symbol] = tick
        if first:
            task = asyncio.create_task(self._match_symbol(tick.symbol))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _match_symbol(self, symbol: str) -> None:
        while (tick := self._pending_ticks.get(symbol)) is not None:
            try:
                await self.match_tick(tick)
            finally:
                if self._pending_ticks.get(symbol) is tick:
                    del self._pending_ticks[symbol]

    async def match_tick(self, tick: Tick) -> None:
        """Fill or trigger every open order of the tick's symbol that it crosses."""
        lock = self._symbol_locks.setdefault(tick.symbol, asyncio.Lock())
        async with lock:
            async for doc in self.orders.find(
                {
                    "symbol": tick.symbol,
                    "status": {"$in": list(OPEN_STATUSES)},
                    "pending_fill": None,
                }
            ).sort([("created_at", 1)]):
                try:
                    if doc["type"] in ("STOP", "STOP_LIMIT") and not doc.get("triggered"):
                        await self._maybe_trigger(doc, tick)
                    else:
                        liquidity = "MAKER" if doc["type"] in ("LIMIT", "STOP_LIMIT") else "TAKER"
                        await self._match(doc, tick, liquidity)
                except Exception:
                    log.exception("matching failed", extra={"order_id": doc["_id"]})

    async def expire_due(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        expired = 0
        async for doc in self.orders.find(
            {
                "time_in_force": "GTD",
                "status": {"$in": list(OPEN_STATUSES)},
                "expires_at": {"$lte": now},
            }
        ):
            closed = await self._close(doc, "EXPIRED")
            expired += closed.get("status") == "EXPIRED"
        return expired

    async def recover(self, full: bool = False) -> dict[str, int]:
        """Finish or roll back what a crash cut short: claimed fills, orders stuck
        before their hold, holds of closed orders not yet released. Every query is
        selective (indexed fields that are set only while work is in flight); `full`
        (the first sweep after start) also looks for closed orders still holding
        funds that carry no `release_due` (orders written before it existed)."""
        counts = {"fills": 0, "pending": 0, "holds": 0}
        # Only what has been left alone for STALE_PENDING: younger claims, orders and
        # holds are still in the hands of the request (or tick) that made them.
        stale = now_ms() - STALE_PENDING
        async for doc in self.orders.find({"pending_fill.at": {"$lt": stale, "$type": "date"}}):
            await self.complete_fill(doc)
            counts["fills"] += 1
        async for doc in self.orders.find({"status": "PENDING", "created_at": {"$lt": stale}}):
            balance = await self.ledger.collection.find_one(
                {"_id": f"{doc['user_id']}:{doc['hold_asset']}"}
            )
            held = self.ledger._applied_after(balance, f"hold:{doc['_id']}") is not None
            if held:
                opened = await self._transition(doc["_id"], ("PENDING",), "OPEN")
                if opened is not None:
                    await self._publish(opened)
            else:
                await self._transition(doc["_id"], ("PENDING",), "REJECTED", "interrupted")
            counts["pending"] += 1
        # "$type": MongoDB never matches null with $lt on a date; the embedded engine
        # does (it orders null first), which would release every open order's hold.
        holding: dict[str, Any] = {"release_due": {"$lt": stale, "$type": "date"}}
        if full:
            holding = {
                "$or": [
                    holding,
                    {
                        "status": {"$in": ["FILLED", *RELEASING]},
                        "hold_remaining": {"$gt": Decimal128(Decimal(0))},
                        "updated_at": {"$lt": stale},
                    },
                ]
            }
        async for doc in self.orders.find(holding):
            await self._release_hold(doc)
            counts["holds"] += 1
        return counts

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="trading-sweeper")

    async def _sweep_loop(self) -> None:
        first = True
        while not self._closing:
            if self.market.is_leader or first:
                try:
                    found = await self.recover(full=first)
                    if any(found.values()):
                        log.warning("recovered interrupted trading operations", extra=found)
                    if self.market.is_leader:
                        await self.expire_due()
                except Exception:
                    log.exception("trading sweep failed")
                first = False
            await asyncio.sleep(1.0)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop matching; let fills in progress finish (a cut fill would wait for the
        next start's recovery), then stop the sweeper."""
        self._closing = True
        self._pending_ticks.clear()
        tasks = [*self._workers, *([self._sweeper] if self._sweeper else [])]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._sweeper = None

    # -- events ----------------------------------------------------------------------

    async def _publish(self, doc: dict[str, Any]) -> None:
        try:
            await self.bus.publish(
                ORDERS_CHANNEL, OrderDocument.model_validate(doc).model_dump(mode="json")
            )
        except Exception:
            log.warning("could not publish an order update", exc_info=True)

    async def _on_order_event(self, message: dict[str, Any]) -> None:
        order = OrderDocument.model_validate(message)
        self.hub.publish(orders_topic(order.user_id), order)


__all__ = ["SYSTEM", "OrderRequest", "TradingEngine", "orders_topic"]
