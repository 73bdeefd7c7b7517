"""The trading engine: places, fills, cancels and expires orders, and finishes work
that a crash or a stall cut short. Orchestration only: the rules (validation, holds,
sizing, rounding) are in rules.py, matching in matching.py, owned and fenced order
work in fills.py, the ledger in ledger.py, the shared book in liquidity.py.

Who does what, and why it is safe whatever the timing:
- a placement owns its order until it answers: it reserves the funds, fills what the
  current price fills (TAKER), decides IOC and FOK, and only then lets the order rest;
  nothing else can fill an order still being placed;
- the feed leader matches resting orders on every tick, taking each one with a
  conditional update before filling it (MAKER for limits that rested);
- a tick's liquidity is shared by every instance (liquidity.py), so two instances
  cannot both sell the same top of the book;
- the recovery sweep (the feed leader, every second; every instance once at start)
  takes over work whose owner's lease ran out, by raising the order's fence, and
  finishes it; the former owner, if it wakes up, changes nothing and answers with
  the order's true state. One order the sweep cannot settle is logged, counted and
  retried with back-off; the sweep goes on for every other order;
- an order's audit entries (`order.placed`, `order.canceled`) ride on the writes that
  decide them and are copied to the audit log by the feed leader (order_audit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from bson import Decimal128
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from cryptovault.config import Settings
from cryptovault.documents.common import new_id, now_ms, to_decimal
from cryptovault.documents.enums import (
    OPEN_STATUSES,
    Liquidity,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from cryptovault.documents.trading import (
    AdjustmentDocument,
    BalanceDocument,
    LedgerEntryDocument,
    OrderDocument,
    TradeDocument,
)
from cryptovault.documents.users import UserDocument
from cryptovault.errors import BadUserInput, Conflict, Forbidden, InsufficientFunds, NotFound
from cryptovault.events.bus import EventBus
from cryptovault.events.hub import Hub
from cryptovault.market.assets import Asset, get_asset
from cryptovault.market.service import MarketService
from cryptovault.market.ticks import Tick
from cryptovault.observability.metrics import Metrics
from cryptovault.security.audit import AuditLog
from cryptovault.security.origin import SYSTEM, Origin
from cryptovault.security.viewer import Viewer
from cryptovault.trading import matching, rules
from cryptovault.trading.adjustments import Adjustments
from cryptovault.trading.fills import (
    LostOwnership,
    OrderWork,
    hold_change,
    ledger_changes,
    work_of,
)
from cryptovault.trading.ledger import HOUSE_FUNDING, USD, Change, Ledger, Line, Outcome
from cryptovault.trading.liquidity import LiquidityBook, MemoryLiquidity
from cryptovault.trading.order_audit import PENDING, OrderAudit, pending
from cryptovault.trading.order_events import OrderEvent, OrderEvents
from cryptovault.trading.resting import RestingOrders
from cryptovault.trading.rules import CENT, Fees, OrderRequest, OrderState

log = logging.getLogger(__name__)

OPEN = [s.value for s in OPEN_STATUSES]
LIVE = [OrderStatus.PENDING.value, *OPEN]
FUNDS_REFUSED = "insufficient funds"
# How long a request waits for an order's owner to finish (a duplicate placement, a
# cancel of an order being filled) before answering with the order as it is.
SETTLE_WAIT = 5.0
SWEEP_BACKOFF_MAX = 300.0
FROZEN = "the account is frozen"
INTERRUPTED = "interrupted before its funds were reserved"


def orders_topic(user_id: str) -> str:
    return f"orders:{user_id}"


@dataclass(frozen=True, slots=True)
class TradingStore:
    """The store collections the engine writes (injected: tests interpose on them)."""

    orders: AsyncCollection
    trades: AsyncCollection
    entries: AsyncCollection
    balances: AsyncCollection
    adjustments: AsyncCollection
    # Read only: whether an account is frozen (placement checks it after writing
    # its order, so a freeze and a placement in flight cannot miss each other).
    users: AsyncCollection

    @classmethod
    def default(cls) -> TradingStore:
        return cls(
            orders=OrderDocument.get_pymongo_collection(),
            trades=TradeDocument.get_pymongo_collection(),
            entries=LedgerEntryDocument.get_pymongo_collection(),
            balances=BalanceDocument.get_pymongo_collection(),
            adjustments=AdjustmentDocument.get_pymongo_collection(),
            users=UserDocument.get_pymongo_collection(),
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
        *,
        liquidity: LiquidityBook | None = None,
        store: TradingStore | None = None,
        clock: Callable[[], datetime] = now_ms,
    ) -> None:
        self.settings = settings
        self.market = market
        self.bus = bus
        self.hub = hub
        self.audit = audit
        self.metrics = metrics
        self.clock = clock
        self.fees = Fees(settings.taker_fee_rate, settings.maker_fee_rate, settings.market_slippage)
        self.lease = timedelta(seconds=settings.order_lease_seconds)
        store = store or TradingStore.default()
        self.orders = store.orders
        self.users = store.users
        self.ledger = Ledger(store.entries, store.balances)
        self.work = OrderWork(store.orders, store.trades, self.ledger, self.lease, clock)
        self.adjustments = Adjustments(store.adjustments, self.ledger, audit, clock)
        self.liquidity = liquidity or MemoryLiquidity(settings.top_of_book_usd)
        self.instance = new_id()[-8:]
        self.settle_wait = SETTLE_WAIT
        self._placing: dict[str, asyncio.Event] = {}
        self._funded: set[str] = set()
        self._symbol_locks: dict[str, asyncio.Lock] = {}
        self._pending_ticks: dict[str, Tick] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._backoff: dict[str, tuple[int, float]] = {}
        # Set by close(): no more matching, and the sweeper stops at once instead of
        # after its pause.
        self._closing = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        # Copies the orders' audit entries to the audit log: on the feed leader.
        self.order_audit = OrderAudit(store.orders, audit, lambda: market.is_leader)
        # Symbols known to have no live order: their ticks skip the store (resting.py).
        self.resting = RestingOrders()
        self.order_events = OrderEvents(bus)
        self.order_events.add_listener(self._on_order_event)
        bus.on_reconnect(self._bus_reconnected)
        market.add_tick_listener(self._on_tick)

    def _owner(self, role: str) -> str:
        return f"{role}:{self.instance}:{new_id()[-8:]}"

    # -- accounts --------------------------------------------------------------------

    async def ensure_account(self, user_id: str) -> None:
        """Open a user's paper account on first touch: the starting balance is
        credited once, through the ledger, whatever the concurrency."""
        if user_id in self._funded:
            return
        amount = self.settings.starting_balance_usd
        if amount > 0:
            funding = Change(
                id=f"funding:{user_id}:0",
                account=user_id,
                asset=USD,
                available=amount,
                held=Decimal(0),
                kind="funding",
                lines=(Line(HOUSE_FUNDING, USD, -amount),),
                txn_id=f"funding:{user_id}",
            )
            if await self.ledger.outcome(funding.id) is None:
                await self.ledger.apply(funding)
            else:  # funded before; its writer may have died before the balance moved
                await self.ledger.catch_up(user_id, USD)
        self._funded.add(user_id)

    async def adjust_balance(
        self,
        actor: Viewer,
        user_id: str,
        asset: str,
        amount: Decimal,
        reason: str,
        origin: Origin,
        idempotency_key: str | None = None,
    ) -> str:
        """An admin credit (or debit, if funds are available) of paper money, applied
        once per idempotency key. Returns the asset's symbol."""
        if asset != USD:
            asset = get_asset(asset).symbol
        if amount == 0 or not amount.is_finite():
            raise BadUserInput("amount must be a non-zero number", field="amount")
        step = CENT if asset == USD else get_asset(asset).quantity_increment
        rules.check_amount(abs(amount), step, "amount")
        if not reason.strip() or len(reason) > 500:
            raise BadUserInput("Give a reason (at most 500 characters)", field="reason")
        await self.ensure_account(user_id)
        await self.adjustments.adjust(
            actor, user_id, asset, amount, reason.strip(), idempotency_key, origin
        )
        return asset

    # -- placing ---------------------------------------------------------------------

    async def place(self, viewer: Viewer, req: OrderRequest, origin: Origin) -> OrderDocument:
        """Place an order and answer with what it is once placement is done: FILLED,
        PARTIALLY_FILLED, OPEN (resting), CANCELED (IOC/FOK), or REJECTED."""
        quote = self.market.quote(get_asset(req.symbol).symbol)
        tick = quote.tick if quote else None
        asset = rules.validate(req, tick, self.clock())
        user_id = viewer.user_id
        await self.ensure_account(user_id)
        hold_asset, hold = rules.hold_for(req, asset, tick, self.fees)
        order_id = new_id()
        # Requests repeating this order's client order id in this process wait for this
        # event, not by polling the store (which would slow this placement down).
        self._placing[order_id] = placed = asyncio.Event()
        try:
            return await self._place(viewer, req, origin, asset, order_id, hold_asset, hold)
        finally:
            placed.set()
            del self._placing[order_id]

    async def _place(
        self,
        viewer: Viewer,
        req: OrderRequest,
        origin: Origin,
        asset: Asset,
        order_id: str,
        hold_asset: str,
        hold: Decimal,
    ) -> OrderDocument:
        user_id = viewer.user_id
        now = self.clock()
        key = f"{user_id}:{req.client_order_id}" if req.client_order_id else f"order:{order_id}"
        doc: dict[str, Any] = {
            "_id": order_id,
            "user_id": user_id,
            "client_order_id": req.client_order_id,
            "idempotency_key": key,
            "symbol": asset.symbol,
            "side": req.side.value,
            "type": req.type.value,
            "time_in_force": req.time_in_force.value,
            "quantity": _d128(req.quantity),
            "quote_quantity": _d128(req.quote_quantity),
            "limit_price": _d128(req.limit_price),
            "stop_price": _d128(req.stop_price),
            "expires_at": req.expires_at,
            "status": OrderStatus.PENDING.value,
            "triggered": False,
            "filled_quantity": _d128(Decimal(0)),
            "spent_quote": _d128(Decimal(0)),
            "fee_basis": _d128(Decimal(0)),
            "fees": _d128(Decimal(0)),
            "hold_asset": hold_asset,
            "hold_remaining": _d128(hold),
            "fills": 0,
            # Placement owns the order until it answers (fills.py).
            "owner": self._owner("place"),
            "fence": 1,
            "lease_until": now + self.lease,
            "work": None,
            "close_request": None,
            "reject_reason": None,
            "history": [{"status": OrderStatus.PENDING.value, "at": now}],
            "created_at": now,
            "updated_at": now,
            # Its audit entry, copied to the audit log once it is placed (a rejection
            # drops it): written with the order, never lost (order_audit.py).
            **pending(
                [
                    self.order_audit.entry(
                        "order.placed",
                        actor=viewer,
                        target=f"order:{order_id}",
                        origin=origin,
                        details={
                            "symbol": asset.symbol,
                            "side": req.side.value,
                            "type": req.type.value,
                            "quantity": req.quantity,
                            "quoteQuantity": req.quote_quantity,
                            "limitPrice": req.limit_price,
                            "stopPrice": req.stop_price,
                        },
                    )
                ]
            ),
        }
        # What the current price does to the order is decided before it is written and
        # recorded in it (`work`): its ledger entries are then written with its hold,
        # and a placement cut off after its hold is finished as planned by the sweep.
        planned = await self._plan_placement(doc, asset)
        if planned.plan is not None:
            doc["work"] = work_of(planned.plan, 0, now)
        if planned.triggered:
            doc["triggered"] = True
            doc["history"].append({"status": "TRIGGERED", "at": now})
        doc["match_key"] = matching.match_key_of(doc)  # what the tick matcher reads it by
        try:
            await self.orders.insert_one(doc)
        except DuplicateKeyError:
            await planned.give_back(self.liquidity)
            return await self._placed_already(key)
        # After the order is written: a freeze either sees this order (and cancels
        # it) or set the flag before this read (and the order is refused here).
        if await self.users.find_one({"_id": user_id, "frozen": True}, {"_id": 1}):
            await planned.give_back(self.liquidity)
            with contextlib.suppress(LostOwnership):  # else the sweep rejected it already
                await self.work.reject(doc, FROZEN)
            raise Forbidden(
                "The account is frozen: it cannot place orders", reason="ACCOUNT_FROZEN"
            )
        changes = [hold_change(doc, hold)]
        if doc["work"] is not None:
            changes += ledger_changes(doc, doc["work"])
        try:
            outcome = await self.ledger.apply_all(changes)
        except InsufficientFunds as refused:
            await planned.give_back(self.liquidity)
            try:
                doc = await self.work.reject(doc, f"{FUNDS_REFUSED}: {refused.message}")
            except LostOwnership:
                doc = await self._read(order_id)
            await self._publish(doc)
            if doc["status"] == OrderStatus.REJECTED:
                raise
            return OrderDocument.model_validate(doc)
        if outcome is Outcome.VOID:
            # Taken over before the funds were reserved: the void decided it, the
            # sweep that wrote it rejects the order (maybe not yet: answer the outcome).
            await planned.give_back(self.liquidity)
            doc = await self._settle(await self._read(order_id))
            if doc["status"] == OrderStatus.PENDING:
                doc = {
                    **doc,
                    "status": OrderStatus.REJECTED.value,
                    "reject_reason": INTERRUPTED,
                    "hold_remaining": Decimal128(Decimal(0)),
                }
            return OrderDocument.model_validate(doc)
        if self.metrics is not None:
            self.metrics.order_placed(req.side.value, req.type.value)
        try:
            if doc["work"] is not None:  # its entries are written with the hold
                doc = await self.work.complete(doc, applied=True)
            elif self._expired(doc):
                doc = await self.work.close(doc, OrderStatus.EXPIRED, None)
            else:
                doc = await self.work.let_go(doc)
        except LostOwnership:
            # Stalled past its lease: the sweep finished the placement. Its true state:
            doc = await self._read(order_id)
        await self._done(doc)
        return OrderDocument.model_validate(doc)

    async def _plan_placement(self, doc: dict[str, Any], asset: Asset) -> _Planned:
        """What the current price does to an order being placed: a fill (TAKER), an
        IOC/FOK decided, a stop triggered, or nothing (it rests)."""
        state = OrderState.of(doc)
        kind = OrderType(doc["type"])
        tif = TimeInForce(doc["time_in_force"])
        if self._expired(doc):
            return _Planned()
        # The latest tick, not the one validation saw: a request that stalled in
        # between fills at today's price. (A stall after this is bounded by the lease:
        # past it the order is taken over, and its plan completed or dropped.)
        quote = self.market.quote(asset.symbol)
        tick = quote.tick if quote is not None else None
        triggered = False
        plan: rules.Fill | None = None
        if tick is not None and kind.has_stop:
            triggered = matching.stop_crossed(
                Side(doc["side"]), to_decimal(doc["stop_price"]), tick
            )
        price = (
            matching.execution_price(
                state.side, kind, _dec(doc.get("limit_price")), triggered, tick
            )
            if tick is not None
            else None
        )
        if price is not None and tick is not None:
            plan = await self._plan_on_tick(
                state, asset, price, tick, Liquidity.TAKER, tif if tif.immediate else None
            )
        if plan is None and tif.immediate:
            plan = rules.close_plan(state, OrderStatus.CANCELED, f"{tif.value}: not fillable now")
        return _Planned(plan, triggered, tick)

    def _expired(self, doc: dict[str, Any]) -> bool:
        expires = doc.get("expires_at")
        return (
            doc["time_in_force"] == TimeInForce.GTD
            and expires is not None
            and _aware(expires) <= self.clock()
        )

    async def _plan_on_tick(
        self,
        state: OrderState,
        asset: Asset,
        price: Decimal,
        tick: Tick,
        liquidity: Liquidity,
        immediate: TimeInForce | None = None,
    ) -> rules.Fill | None:
        """Plan a fill at `price`, taking its quantity from the tick's shared book
        (what the plan does not use goes back)."""
        wanted = state.remaining
        if wanted is None:
            wanted = asset.floor_quantity(state.held / price)
        granted = await self.liquidity.take(tick, wanted)
        plan = rules.plan_fill(
            state, asset, price, granted, liquidity, self.fees, immediate=immediate
        )
        used = plan.quantity if plan is not None else Decimal(0)
        if granted > used:
            await self.liquidity.give_back(tick, granted - used)
        return plan

    async def _placed_already(self, key: str) -> OrderDocument:
        """The order a client order id already names, once its placement is done; a
        placement refused for funds answers INSUFFICIENT_FUNDS again."""
        doc = await self.orders.find_one({"idempotency_key": key})
        if doc is None:  # pragma: no cover - orders are never deleted
            raise Conflict("An order with this clientOrderId is being placed")
        doc = await self._settle(doc)
        reason = doc.get("reject_reason") or ""
        if doc["status"] == OrderStatus.REJECTED and reason.startswith(FUNDS_REFUSED):
            raise InsufficientFunds(reason.split(": ", 1)[-1], orderId=doc["_id"])
        return OrderDocument.model_validate(doc)

    async def _settle(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The order once its owner let it go (or as it is after `settle_wait`)."""
        here = self._placing.get(doc["_id"])
        if here is not None:  # being placed by this process
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(here.wait(), self.settle_wait)
            return await self._read(doc["_id"])
        deadline = time.monotonic() + self.settle_wait
        delay = 0.01
        while doc.get("owner") is not None and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
            doc = await self._read(doc["_id"])
        return doc

    async def _read(self, order_id: str) -> dict[str, Any]:
        doc = await self.orders.find_one({"_id": order_id})
        if doc is None:  # pragma: no cover - orders are never deleted
            raise NotFound("No such order", id=order_id)
        return doc

    # -- canceling -------------------------------------------------------------------

    async def cancel(self, viewer: Viewer, order_id: str, origin: Origin) -> OrderDocument:
        """Cancel an open order (or one being placed or filled: its owner closes it as
        soon as it is done; the answer then shows cancelRequested)."""
        # Most orders canceled are resting and unowned: taken, with the cancel and its
        # audit entry recorded, in one write (no read first); any other is read and
        # asked of its owner (the entry carried by that write).
        status = OrderStatus.CANCELED
        entry = self.order_audit.entry(
            "order.canceled", actor=viewer, target=f"order:{order_id}", origin=origin
        )
        taken = await self.work.take_open(
            order_id, self._owner("close"), viewer.user_id, close=(status, None), audit=entry
        )
        doc = await self._close_taken(taken, status, None) if taken is not None else None
        if doc is None:
            doc = await self.orders.find_one({"_id": order_id, "user_id": viewer.user_id})
        if doc is None:
            raise NotFound("No such order", id=order_id)
        if taken is not None:
            canceled = True
        elif doc["status"] in LIVE:
            doc = await self._close_or_request(doc, OrderStatus.CANCELED, None, entry=entry)
            requested = doc["status"] in LIVE and doc.get("close_request") is not None
            canceled = doc["status"] == OrderStatus.CANCELED or requested
        else:
            canceled = False  # closed before this request
        if not canceled:
            raise Conflict(
                f"The order is {doc['status']}: only open orders can be canceled",
                status=doc["status"],
            )
        return OrderDocument.model_validate(doc)

    async def _close_or_request(
        self,
        doc: dict[str, Any],
        status: OrderStatus,
        reason: str | None,
        wait: bool = True,
        entry: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Close the order now if nobody owns it, else ask its owner to; returns the
        order (after its owner is done, when `wait`). `entry`: the close's audit entry,
        carried by the write that takes or asks (or, when another close was asked
        already, added to it): the order's owner keeps it if the order closes so."""
        for _ in range(5):
            if doc["status"] not in LIVE:
                return doc
            taken = await self.work.take_open(
                doc["_id"], self._owner("close"), close=(status, reason), audit=entry
            )
            if taken is not None:
                return await self._close_taken(taken, status, reason)
            if await self.work.request_close(doc["_id"], status, reason, audit=entry):
                doc = await self._read(doc["_id"])
                return await self._settle(doc) if wait else doc
            doc = await self._read(doc["_id"])
            if doc.get("close_request") and (
                entry is None or await self.work.join_close(doc["_id"], entry)
            ):
                return await self._settle(doc) if wait else doc
        raise Conflict("The order kept changing while closing it: try again", id=doc["_id"])

    async def _close_taken(
        self, taken: dict[str, Any], status: OrderStatus, reason: str | None
    ) -> dict[str, Any]:
        """Close an order taken with this close recorded (take_open(close=...))."""
        try:
            doc = await self.work.close(taken, status, reason)
        except LostOwnership:
            doc = await self._read(taken["_id"])
        await self._done(doc)
        return doc

    async def cancel_all(
        self, user_id: str, actor: Viewer, origin: Origin, reason: str = "account frozen"
    ) -> int:
        """Cancel every open order of a user (when an admin freezes the account or the
        user deletes it; the account is flagged first, so a placement in flight refuses
        itself). Orders being placed or filled are closed by their owner. Each order is
        tried; if any could not be, the error says so after all were tried (calling it
        again is safe)."""
        canceled = failed = 0
        async for doc in self.orders.find({"user_id": user_id, "status": {"$in": LIVE}}):
            entry = self.order_audit.entry(
                "order.canceled",
                actor=actor,
                user_id=user_id,
                target=f"order:{doc['_id']}",
                origin=origin,
                details={"reason": reason},
            )
            try:
                closed = await self._close_or_request(
                    doc, OrderStatus.CANCELED, reason, wait=False, entry=entry
                )
            except Exception:
                log.exception("could not cancel an order", extra={"order_id": doc["_id"]})
                failed += 1
                continue
            if closed["status"] == OrderStatus.CANCELED or closed.get("close_request"):
                canceled += 1
        if failed:
            raise Conflict(f"{failed} order(s) could not be canceled now; retry", failed=failed)
        return canceled

    # -- ticks, expiry (leader) ------------------------------------------------------

    def _on_tick(self, tick: Tick) -> None:
        """Queue the tick for matching without holding up the tick path: each symbol
        keeps only its latest unprocessed tick, matched by one worker at a time."""
        if not self.market.is_leader or self._closing.is_set() or self.resting.none(tick.symbol):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a tick applied outside the event loop (seeding prices): no worker
        first = tick.symbol not in self._pending_ticks
        self._pending_ticks[tick.symbol] = tick
        if first:
            task = loop.create_task(self._match_symbol(tick.symbol))
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
        """Fill or trigger every resting order of the tick's symbol that it crosses
        (only those are read: matching.crossing). A symbol known to have no live order
        reads nothing (resting.py)."""
        symbol, resting = tick.symbol, self.resting
        if resting.none(symbol):
            return
        lock = self._symbol_locks.setdefault(symbol, asyncio.Lock())
        async with lock:
            query = {
                "symbol": symbol,
                "status": {"$in": OPEN},
                "owner": None,
                **matching.crossing(tick, self.clock()),
            }
            found = False
            async for doc in self.orders.find(query).sort([("created_at", 1)]):
                found = True
                try:
                    await self._match_one(doc, tick)
                except Exception:
                    log.exception("matching failed", extra={"order_id": doc["_id"]})
            if not found and not resting.known(symbol):
                mark = resting.mark(symbol)
                live = await self.orders.find_one(
                    {"symbol": symbol, "status": {"$in": LIVE}}, {"_id": 1}
                )
                resting.learned(symbol, live is not None, mark)

    async def _match_one(self, doc: dict[str, Any], tick: Tick) -> None:
        if self._expired(doc):  # past expiresAt: closed, never filled, whatever the sweep's pace
            taken = await self.work.take(doc, self._owner("expire"))
            if taken is not None:
                with contextlib.suppress(LostOwnership):
                    await self._done(await self.work.close(taken, OrderStatus.EXPIRED, None))
            return
        kind, side = OrderType(doc["type"]), Side(doc["side"])
        just_triggered = False
        if kind.has_stop and not doc.get("triggered"):
            if not matching.stop_crossed(side, to_decimal(doc["stop_price"]), tick):
                return
            just_triggered = True
        # A stop gets here triggered (before, or by this tick).
        price = matching.execution_price(side, kind, _dec(doc.get("limit_price")), True, tick)
        plan = None
        if price is not None:
            liquidity = matching.liquidity(kind, resting=not just_triggered)
            plan = await self._plan_on_tick(
                OrderState.of(doc), get_asset(tick.symbol), price, tick, liquidity
            )
        if plan is None and not just_triggered:
            return
        taken = await self.work.take(doc, self._owner("match"), plan=plan, triggered=just_triggered)
        if taken is None:  # changed since read (canceled, taken by someone else)
            if plan is not None:
                await self.liquidity.give_back(tick, plan.quantity)
            return
        try:
            if plan is None:
                done = await self.work.let_go(taken)
            else:
                done = await self.work.complete(taken)
        except LostOwnership:
            return  # taken over: its new owner finishes and publishes
        await self._done(done)

    async def expire_due(self, now: datetime | None = None) -> int:
        """Expire GTD orders past their expiresAt (their owner does, if owned)."""
        now = now or self.clock()
        expired = 0
        async for doc in self.orders.find(
            {
                "time_in_force": TimeInForce.GTD.value,
                "status": {"$in": LIVE},
                "expires_at": {"$lte": now},
            }
        ):
            try:
                closed = await self._close_or_request(doc, OrderStatus.EXPIRED, None, wait=False)
            except Exception:
                log.exception("expiry failed", extra={"order_id": doc["_id"]})
                continue
            expired += closed["status"] == OrderStatus.EXPIRED
        return expired

    # -- recovery --------------------------------------------------------------------

    async def recover(self) -> dict[str, int]:
        """Take over and finish the work of every order whose owner's lease ran out,
        and every adjustment left pending: one at a time, each failure isolated."""
        counts = {"orders": 0, "adjustments": 0, "failed": 0}
        now = self.clock()
        async for doc in self.orders.find({"lease_until": {"$lt": now, "$type": "date"}}):
            if await self._isolated("order", doc["_id"], partial(self._recover_order, doc)):
                counts["orders"] += 1
            else:
                counts["failed"] += 1
        async for adj in self.adjustments.pending(now - self.lease):
            if await self._isolated(
                "adjustment", adj["_id"], partial(self.adjustments.finish, adj)
            ):
                counts["adjustments"] += 1
            else:
                counts["failed"] += 1
        return counts

    async def _isolated(self, kind: str, key: str, work: Callable[[], Awaitable[Any]]) -> bool:
        """Run one recovery, unless it failed lately (exponential back-off); a failure
        is logged and counted, never raised."""
        failures, not_before = self._backoff.get(key, (0, 0.0))
        if time.monotonic() < not_before:
            return False
        try:
            await work()
        except InsufficientFunds:
            self._backoff.pop(key, None)  # a refused adjustment: settled
            return True
        except Exception:
            failures += 1
            delay = min(2.0**failures, SWEEP_BACKOFF_MAX)
            self._backoff[key] = (failures, time.monotonic() + delay)
            log.exception(
                "recovery sweep could not settle",
                extra={"kind": kind, "id": key, "retry_in": delay},
            )
            if self.metrics is not None:
                self.metrics.sweep_failed(kind)
            return False
        self._backoff.pop(key, None)
        return True

    async def _recover_order(self, doc: dict[str, Any]) -> None:
        taken = await self.work.take_over(doc, self._owner("sweep"))
        if taken is None:
            return  # its owner finished meanwhile, or another sweep took it
        if taken["status"] == OrderStatus.PENDING:
            stage = "placing"  # maybe with its plan recorded: done if its hold was
        elif taken.get("work"):
            stage = "filling"
        else:
            stage = "idle"
        if self.metrics is not None:
            self.metrics.order_taken_over(stage)
        log.warning(
            "taking over an order whose owner's lease ran out",
            extra={"order_id": taken["_id"], "stage": stage, "owner": doc.get("owner")},
        )
        try:
            if stage == "filling":
                done = await self.work.complete(taken)
            elif stage == "placing":
                done = await self._finish_placement(taken)
            else:
                done = await self.work.let_go(taken)
        except LostOwnership:
            return  # taken over again (this sweep stalled past the lease itself)
        await self._done(done)

    async def _finish_placement(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A placement cut off: if its funds were reserved the order goes on (resting;
        an IOC or FOK, which cannot be decided now, is canceled); if not, the hold is
        voided, so the cut-off request can never reserve them later, and it is rejected."""
        # ALREADY if its hold was written (and then the balance is brought up to
        # date, in case the placement died before moving it); else VOID for good.
        outcome = await self.ledger.void(hold_change(doc, rules.ZERO))
        if outcome is Outcome.VOID:
            return await self.work.reject(doc, INTERRUPTED)
        if doc.get("work"):
            # Planned when it was placed (an IOC or FOK decided then included): the
            # plan is carried out, entries written already or not.
            return await self.work.complete(doc)
        if TimeInForce(doc["time_in_force"]).immediate:
            return await self.work.close(
                doc, OrderStatus.CANCELED, "interrupted before it could fill"
            )
        return await self.work.let_go(doc)

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="trading-sweeper")
        self.order_audit.start()

    async def _sweep_loop(self) -> None:
        first = True
        while not self._closing.is_set():
            if self.market.is_leader or first:
                try:
                    found = await self.recover()
                    if any(found.values()):
                        log.warning("recovered interrupted trading operations", extra=found)
                    if self.market.is_leader:
                        await self.expire_due()
                except Exception:
                    log.exception("trading sweep failed")
                first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), 1.0)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop matching; let fills in progress finish (a cut fill would wait for the
        sweep), then stop the sweeper."""
        self._closing.set()
        self._pending_ticks.clear()
        tasks = [*self._workers, *([self._sweeper] if self._sweeper else [])]
        if tasks:
            try:
                _, pending = await asyncio.wait(tasks, timeout=timeout)
            except asyncio.CancelledError:
                # This close was cut: no fill or sweep goes on under a closing store
                # (what was cut waits for the next sweep, as at the timeout).
                for task in tasks:
                    task.cancel()
                raise
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._sweeper = None
        await self.order_audit.close(timeout)

    # -- events ----------------------------------------------------------------------

    async def _done(self, doc: dict[str, Any]) -> None:
        if (
            self.metrics is not None
            and doc["status"] == OrderStatus.FILLED
            and not doc.get("owner")
        ):
            self.metrics.order_filled(doc["side"])
        await self._publish(doc)

    async def _publish(self, doc: dict[str, Any]) -> None:
        self.resting.changed(doc["symbol"])  # here at once, even if the bus fails
        try:
            await self.order_events.publish(OrderEvent.of(doc))
        except Exception:
            log.warning("could not publish an order update", exc_info=True)

    def _on_order_event(self, event: OrderEvent) -> None:
        self.resting.changed(event.order.symbol)
        self.hub.publish(orders_topic(event.user_id), event)
        order = event.order
        if order.audit_state == PENDING and order.owner is None and self.market.is_leader:
            self.order_audit.nudge()

    async def _bus_reconnected(self) -> None:
        self.resting.forget()  # order events may have been lost meanwhile


@dataclass(frozen=True, slots=True)
class _Planned:
    """A placement's plan, and the tick whose book lent it its quantity."""

    plan: rules.Fill | None = None
    triggered: bool = False
    tick: Tick | None = None

    async def give_back(self, liquidity: LiquidityBook) -> None:
        """The plan will never be carried out: its share of the tick's book is free."""
        if self.plan is not None and self.tick is not None and self.plan.quantity > 0:
            await liquidity.give_back(self.tick, self.plan.quantity)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _dec(value: Any) -> Decimal | None:
    return None if value is None else to_decimal(value)


def _d128(value: Decimal | None) -> Decimal128 | None:
    return None if value is None else Decimal128(value)


__all__ = ["SYSTEM", "OrderRequest", "TradingEngine", "TradingStore", "orders_topic"]
