"""An order's work that spans several writes, owned and fenced: taking the order,
recording the work planned on it (a fill, a close), completing that work, letting the
order go, and taking over work whose owner's lease ran out.

- Taking an order is one conditional update: unowned as it was read (or, for a
  takeover, held by the same owner under the same fence with its lease run out) ->
  owner, lease, fence + 1.
- Every later write of the owner is conditional on that fence. A takeover raises the
  fence, so a former owner that wakes up (a paused process, a slow request) changes
  nothing on the order: its write matches nothing, it raises LostOwnership, and its
  caller reports the order's true state.
- Work is recorded on the order before any of it is done (`work`: the fill planned to
  the cent, the close and what it releases), so completing it is mechanical: whoever
  owns the order next completes the same work. Its ledger entries and trade have
  deterministic ids, so they are written once, forever (trading/ledger.py). A
  placement records its plan in the order's first write; a close taken with its close
  request recorded (a cancel) needs no other record: what it releases follows from
  the order, unchanged until the close completes.
- Letting go is conditional on no close request: a cancel, expiry or freeze asked
  while the order was owned is carried out by its owner before it lets go.
- A cancel's audit entry rides on the write that records the cancel (take_open,
  request_close, join_close); a rejection drops the order's entries, and a close other
  than CANCELED drops those of the cancels it overrode (trading/order_audit.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from bson import Decimal128
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from cryptovault.documents.common import now_ms, to_decimal
from cryptovault.documents.enums import Liquidity, OrderStatus, Side
from cryptovault.trading import matching
from cryptovault.trading.ledger import (
    HOUSE_FEES,
    HOUSE_MARKET,
    USD,
    Change,
    Ledger,
    LedgerError,
    Line,
    Outcome,
)
from cryptovault.trading.order_audit import DROP_ALL, DROP_CANCELS, carry
from cryptovault.trading.rules import ZERO, Fill, OrderState, close_plan, fee_basis_of

AFTER = ReturnDocument.AFTER


class LostOwnership(Exception):
    """The order was taken over (its owner's lease ran out): the store has its state."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} was taken over")
        self.order_id = order_id


def fence_of(doc: dict[str, Any]) -> Any:
    # Orders written before fencing have no `fence`: they are at 0.
    fence = int(doc.get("fence") or 0)
    return fence if fence else {"$in": [0, None]}


def _d(value: Decimal) -> Decimal128:
    return Decimal128(value)


def hold_change(doc: dict[str, Any], amount: Decimal) -> Change:
    """The reservation an order makes when placed."""
    return Change(
        id=f"hold:{doc['_id']}",
        account=doc["user_id"],
        asset=doc["hold_asset"],
        available=-amount,
        held=amount,
        kind="hold",
        txn_id=f"hold:{doc['_id']}",
        order_id=doc["_id"],
    )


def work_of(fill: Fill, n: int, at: datetime) -> dict[str, Any]:
    return {
        "n": n,
        "quantity": _d(fill.quantity),
        "price": _d(fill.price),
        "cash": _d(fill.cash),
        "fee": _d(fill.fee),
        "fee_basis": _d(fill.fee_basis),
        "liquidity": fill.liquidity.value,
        "held_used": _d(fill.held_used),
        "release": _d(fill.release),
        "close": fill.close.value if fill.close else None,
        "reason": fill.reason,
        "at": at,
    }


def fill_of(work: dict[str, Any]) -> Fill:
    return Fill(
        quantity=to_decimal(work["quantity"]),
        price=to_decimal(work["price"]),
        cash=to_decimal(work["cash"]),
        fee=to_decimal(work["fee"]),
        fee_basis=to_decimal(work["fee_basis"]),
        liquidity=Liquidity(work["liquidity"]),
        held_used=to_decimal(work["held_used"]),
        release=to_decimal(work["release"]),
        close=OrderStatus(work["close"]) if work.get("close") else None,
        reason=work.get("reason"),
    )


def ledger_changes(doc: dict[str, Any], work: dict[str, Any]) -> list[Change]:
    """The ledger entries of an order's recorded work (deterministic ids)."""
    fill = fill_of(work)
    oid, user, symbol = doc["_id"], doc["user_id"], doc["symbol"]
    if fill.quantity <= 0:
        if fill.release <= 0:
            return []
        return [
            Change(
                id=f"release:{oid}",
                account=user,
                asset=doc["hold_asset"],
                available=fill.release,
                held=-fill.release,
                kind="release",
                txn_id=f"release:{oid}",
                order_id=oid,
            )
        ]
    txn = f"fill:{oid}:{work['n']}"
    common: dict[str, Any] = {
        "txn_id": txn,
        "order_id": oid,
        "trade_id": f"{oid}:{work['n']}",
        "at": work["at"],
        "kind": "trade",
    }
    usd_lines = (Line(HOUSE_MARKET, USD, fill.cash), Line(HOUSE_FEES, USD, fill.fee))
    if Side(doc["side"]) is Side.BUY:
        # The hold pays cost and fee; what is left of it is released when this closes.
        return [
            Change(
                f"{txn}:0",
                user,
                USD,
                available=fill.release,
                held=-(fill.held_used + fill.release),
                lines=usd_lines,
                **common,
            ),
            Change(
                f"{txn}:1",
                user,
                symbol,
                available=fill.quantity,
                held=ZERO,
                lines=(Line(HOUSE_MARKET, symbol, -fill.quantity),),
                **common,
            ),
        ]
    return [
        Change(
            f"{txn}:0",
            user,
            symbol,
            available=fill.release,
            held=-(fill.quantity + fill.release),
            lines=(Line(HOUSE_MARKET, symbol, fill.quantity),),
            **common,
        ),
        Change(
            f"{txn}:1",
            user,
            USD,
            available=fill.cash - fill.fee,
            held=ZERO,
            lines=(Line(HOUSE_MARKET, USD, -fill.cash), Line(HOUSE_FEES, USD, fill.fee)),
            **common,
        ),
    ]


def close_request(status: OrderStatus, reason: str | None) -> dict[str, Any]:
    """A close asked of an order's owner, as recorded on the order."""
    return {"status": status.value, "reason": reason}


def _events(doc: dict[str, Any], status: OrderStatus, now: datetime) -> list[dict[str, Any]]:
    events = []
    if doc["status"] == OrderStatus.PENDING and status is not OrderStatus.REJECTED:
        events.append({"status": OrderStatus.OPEN.value, "at": now})
    if status is not OrderStatus.OPEN or not events:
        events.append({"status": status.value, "at": now})
    return events


@dataclass
class OrderWork:
    """The store's orders and trades collections and the ledger (injected, so tests
    can interpose on every store command)."""

    orders: AsyncCollection
    trades: AsyncCollection
    ledger: Ledger
    lease: timedelta
    clock: Callable[[], datetime] = now_ms

    # -- taking ----------------------------------------------------------------------

    def _taken(self, owner: str) -> dict[str, Any]:
        return {"owner": owner, "lease_until": self.clock() + self.lease}

    async def take(
        self,
        doc: dict[str, Any],
        owner: str,
        *,
        plan: Fill | None = None,
        triggered: bool = False,
    ) -> dict[str, Any] | None:
        """Take an unowned order as it was read (nothing changed since: same fence),
        recording `plan` as its work in the same write; None if it changed."""
        fields = self._taken(owner)
        update: dict[str, Any] = {"$set": fields, "$inc": {"fence": 1}}
        if plan is not None:
            fields["work"] = work_of(plan, doc.get("fills", 0), self.clock())
        if triggered:
            fields.update(triggered=True, match_key=matching.match_key_of(doc, triggered=True))
            update["$push"] = {"history": {"status": "TRIGGERED", "at": self.clock()}}
        return await self.orders.find_one_and_update(
            {"_id": doc["_id"], "owner": None, "fence": fence_of(doc)},
            update,
            return_document=AFTER,
        )

    async def take_open(
        self,
        order_id: str,
        owner: str,
        user_id: str | None = None,
        *,
        close: tuple[OrderStatus, str | None] | None = None,
        audit: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Take an unowned open order by id (a cancel, an expiry). `close`: the close
        the taker is about to make, recorded in the same write (as a close request:
        whoever owns the order next carries it out, and `close` needs no other record).
        `audit`: the close's audit entry, carried by the same write."""
        query: dict[str, Any] = {
            "_id": order_id,
            "owner": None,
            "status": {"$in": [OrderStatus.OPEN.value, OrderStatus.PARTIALLY_FILLED.value]},
        }
        if user_id is not None:
            query["user_id"] = user_id
        fields = self._taken(owner)
        if close is not None:
            fields["close_request"] = close_request(*close)
        update = _with_entry({"$set": fields, "$inc": {"fence": 1}}, audit)
        return await self.orders.find_one_and_update(query, update, return_document=AFTER)

    async def take_over(self, doc: dict[str, Any], owner: str) -> dict[str, Any] | None:
        """Take an order from an owner whose lease ran out; None if it moved on."""
        return await self.orders.find_one_and_update(
            {
                "_id": doc["_id"],
                "owner": doc["owner"],
                "fence": fence_of(doc),
                "lease_until": {"$lt": self.clock(), "$type": "date"},
            },
            {"$set": self._taken(owner), "$inc": {"fence": 1}},
            return_document=AFTER,
        )

    # -- fenced writes ---------------------------------------------------------------

    async def _write(
        self, doc: dict[str, Any], update: dict[str, Any], **conditions: Any
    ) -> dict[str, Any] | None:
        return await self.orders.find_one_and_update(
            {"_id": doc["_id"], "fence": fence_of(doc), **conditions},
            update,
            return_document=AFTER,
        )

    async def _reread(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The order after a fenced write matched nothing: still ours, or LostOwnership."""
        current = await self.orders.find_one({"_id": doc["_id"]})
        if current is None or fence_of(current) != fence_of(doc):
            raise LostOwnership(doc["_id"])
        return current

    async def begin(
        self, doc: dict[str, Any], plan: Fill, *, triggered: bool = False
    ) -> dict[str, Any]:
        """Record `plan` as the owned order's work, before doing any of it (and renew
        the lease: an owner making progress keeps its order)."""
        now = self.clock()
        update: dict[str, Any] = {
            "$set": {
                "work": work_of(plan, doc.get("fills", 0), now),
                "lease_until": now + self.lease,
            }
        }
        if triggered:
            update["$set"]["triggered"] = True
            update["$set"]["match_key"] = matching.match_key_of(doc, triggered=True)
            update["$push"] = {"history": {"status": "TRIGGERED", "at": now}}
        done = await self._write(doc, update, work=None)
        if done is None:
            await self._reread(doc)
            raise LedgerError(f"order {doc['_id']} already has work in flight")
        return done

    async def complete(
        self, doc: dict[str, Any], *, work: dict[str, Any] | None = None, applied: bool = False
    ) -> dict[str, Any]:
        """Do the owned order's recorded work (ledger entries, trade), write its result
        and let the order go (closing it first if a close was requested).

        `work`: the work when it is not on the order because it follows from what is
        (a requested close: close_plan of the order as it is, the same for whoever
        owns it next). `applied`: its ledger entries are written already (placement
        writes them with its hold: Ledger.apply_all)."""
        work = work if work is not None else doc["work"]
        fill = fill_of(work)
        changes = [] if applied else ledger_changes(doc, work)
        if changes and await self.ledger.apply_all(changes) is Outcome.VOID:
            raise LedgerError(f"{changes[0].id} was voided")  # pragma: no cover - a bug
        if fill.quantity > 0:
            await self._record_trade(doc, work, fill)
        state = OrderState.of(doc)
        filled = state.filled + fill.quantity
        status = fill.close or (
            OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus(doc["status"])
        )
        if status is OrderStatus.PENDING:
            status = OrderStatus.OPEN
        now = self.clock()
        fields: dict[str, Any] = {
            "work": None,
            "status": status.value,
            "hold_remaining": _d(state.held - fill.held_used - fill.release),
            "updated_at": now,
        }
        if fill.quantity > 0:
            fields.update(
                fills=int(work["n"]) + 1,
                filled_quantity=_d(filled),
                spent_quote=_d(state.spent + fill.notional),
                fee_basis=_d(fee_basis_of(doc) + fill.fee_basis),
                fees=_d(to_decimal(doc.get("fees", 0)) + fill.fee),
            )
        if fill.reason:
            fields["reject_reason"] = fill.reason
        history = {"$push": {"history": {"$each": _events(doc, status, now)}}}
        let_go = {**fields, "owner": None, "lease_until": None}
        if fill.close is not None:
            closing: dict[str, Any] = {"$set": {**let_go, "close_request": None}, **history}
            if fill.close is not OrderStatus.CANCELED:
                # A cancel asked meanwhile (seen or not) canceled nothing: its entry goes.
                closing |= DROP_CANCELS
            done = await self._write(doc, closing)
            if done is None:
                raise LostOwnership(doc["_id"])
            return done
        done = await self._write(doc, {"$set": let_go, **history}, close_request=None)
        if done is not None:
            return done
        # A close was asked meanwhile: record this fill, keep the order, close it.
        await self._reread(doc)
        kept = await self._write(doc, {"$set": fields, **history})
        if kept is None:
            raise LostOwnership(doc["_id"])
        return await self._close_requested(kept)

    async def _record_trade(self, doc: dict[str, Any], work: dict[str, Any], fill: Fill) -> None:
        # Recorded already by an earlier try of the same work: the same trade.
        with contextlib.suppress(DuplicateKeyError):
            await self.trades.insert_one(
                {
                    "_id": f"{doc['_id']}:{work['n']}",
                    "order_id": doc["_id"],
                    "user_id": doc["user_id"],
                    "symbol": doc["symbol"],
                    "side": doc["side"],
                    "quantity": _d(fill.quantity),
                    "price": _d(fill.price),
                    "fee": _d(fill.fee),
                    "liquidity": fill.liquidity.value,
                    "created_at": work["at"],
                }
            )

    async def let_go(self, doc: dict[str, Any], *, triggered: bool = False) -> dict[str, Any]:
        """Let the owned order go with no work done (a placement that rests, a takeover
        that found nothing to finish); a requested close is done first."""
        now = self.clock()
        fields: dict[str, Any] = {"owner": None, "lease_until": None, "updated_at": now}
        events = []
        if triggered:
            fields.update(triggered=True, match_key=matching.match_key_of(doc, triggered=True))
            events.append({"status": "TRIGGERED", "at": now})
        if doc["status"] == OrderStatus.PENDING:
            fields["status"] = OrderStatus.OPEN.value
            events.append({"status": OrderStatus.OPEN.value, "at": now})
        update: dict[str, Any] = {"$set": fields}
        if events:
            update["$push"] = {"history": {"$each": events}}
        done = await self._write(doc, update, close_request=None, work=None)
        if done is not None:
            return done
        current = await self._reread(doc)
        if current.get("work"):  # pragma: no cover - callers complete work first
            return await self.complete(current)
        return await self._close_requested(current)

    async def _close_requested(self, doc: dict[str, Any]) -> dict[str, Any]:
        request = doc.get("close_request") or {}
        status = OrderStatus(request.get("status", OrderStatus.CANCELED.value))
        if doc["status"] == OrderStatus.PENDING:
            # Asked while it was being placed: it opens and closes at once.
            doc = await self._write(
                doc,
                {
                    "$set": {"status": OrderStatus.OPEN.value},
                    "$push": {"history": {"status": OrderStatus.OPEN.value, "at": self.clock()}},
                },
            ) or await self._reread(doc)
        return await self.close(doc, status, request.get("reason"))

    async def close(
        self, doc: dict[str, Any], status: OrderStatus, reason: str | None
    ) -> dict[str, Any]:
        """Close the owned order, releasing what it still holds. When the order records
        this close as requested and has no work in flight, the close follows from the
        order as it is (whoever owns it next releases the same): nothing to record
        first. Otherwise the close is recorded as its work before any of it is done."""
        plan = close_plan(OrderState.of(doc), status, reason)
        if not doc.get("work") and doc.get("close_request") == close_request(status, reason):
            return await self.complete(doc, work=work_of(plan, doc.get("fills", 0), self.clock()))
        doc = await self.begin(doc, plan)
        return await self.complete(doc)

    async def reject(self, doc: dict[str, Any], reason: str) -> dict[str, Any]:
        """Reject the owned order being placed: it holds nothing."""
        now = self.clock()
        done = await self._write(
            doc,
            {
                "$set": {
                    "status": OrderStatus.REJECTED.value,
                    "reject_reason": reason,
                    "hold_remaining": _d(ZERO),
                    "work": None,
                    "owner": None,
                    "lease_until": None,
                    "close_request": None,
                    "updated_at": now,
                },
                "$push": {"history": {"status": OrderStatus.REJECTED.value, "at": now}},
                # Never placed: no order.placed, and a cancel of it canceled nothing.
                **DROP_ALL,
            },
        )
        if done is None:
            raise LostOwnership(doc["_id"])
        return done

    async def request_close(
        self,
        order_id: str,
        status: OrderStatus,
        reason: str | None,
        audit: dict[str, Any] | None = None,
    ) -> bool:
        """Ask the owner of an owned order (being placed or filled) to close it
        (`audit`: the close's audit entry, carried by the same write)."""
        done = await self.orders.find_one_and_update(
            {
                "_id": order_id,
                "owner": {"$ne": None},
                "close_request": None,
                "status": {
                    "$in": [
                        OrderStatus.PENDING.value,
                        OrderStatus.OPEN.value,
                        OrderStatus.PARTIALLY_FILLED.value,
                    ]
                },
            },
            _with_entry({"$set": {"close_request": close_request(status, reason)}}, audit),
            return_document=AFTER,
        )
        return done is not None

    async def join_close(self, order_id: str, audit: dict[str, Any]) -> bool:
        """Add a close's audit entry to an owned order whose close was asked already
        (by someone else): its owner's close keeps or drops it with theirs."""
        done = await self.orders.find_one_and_update(
            {"_id": order_id, "owner": {"$ne": None}, "close_request": {"$ne": None}},
            carry(audit),
            return_document=AFTER,
        )
        return done is not None


def _with_entry(update: dict[str, Any], entry: dict[str, Any] | None) -> dict[str, Any]:
    """`update` carrying the audit entry `entry` as well (if any)."""
    if entry is None:
        return update
    added = carry(entry)
    return {
        **update,
        "$set": {**update.get("$set", {}), **added["$set"]},
        "$push": {**update.get("$push", {}), **added["$push"]},
    }
