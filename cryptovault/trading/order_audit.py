"""An order's audit entries (`order.placed`, `order.canceled`), written with the order
and copied to the audit log in batches: never lost, each stored once, at no store
command of the request's own.

- The write that decides the action carries its entry, built in full with a fixed id
  (AuditLog.entry): the placement's insert carries `order.placed`; the write that
  takes an order with its cancel recorded, asks its owner to cancel it, or joins a
  cancel already asked, carries `order.canceled`. The entry waits in the order's
  `audit` list, and `audit_state` is "pending" (indexed: the copier reads only those
  orders, never the history).
- An entry is copied once the order is unowned: by then what it says is settled. A
  placement that fails is rejected, and that write drops the order's entries (it
  was never placed, and a cancel of it did nothing); a cancel asked of an order that
  its owner then fills or expires is dropped by the write that closes it otherwise.
  So the log says an order was canceled exactly when a cancel closed it.
- The copier (`OrderAudit.copy`, on the feed leader, like the recovery sweep) reads
  up to BATCH orders with pending entries, stores their entries in one command (a
  duplicate id means stored already), pushes each to its user's `securityEvents`, and
  then removes exactly the entries it copied from each order (one command for the
  batch; `audit_state` goes when none is left). Killed anywhere, the entries stay
  pending and the next copy stores what is missing; copying twice stores nothing twice.
- When: every order change is published on the bus, and the leader hears each one:
  an order let go with pending entries wakes the copier, which copies at most once
  per COPY_EVERY (orders let go meanwhile share the round: 3 commands per round,
  whatever its size). With no event (the bus lost one, a new leader) a round runs at
  least every CATCH_UP_EVERY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from cryptovault.security.audit import AuditLog

log = logging.getLogger(__name__)

PENDING = "pending"
BATCH = 500
COPY_EVERY = 1.0  # seconds: at most one round per second while orders come
CATCH_UP_EVERY = 30.0  # seconds: a round without any event
CANCELED = "order.canceled"


def carry(entry: dict[str, Any]) -> dict[str, Any]:
    """The update clauses that add `entry` to an order's pending entries (merged into
    the write that decides the action)."""
    return {"$push": {"audit": entry}, "$set": {"audit_state": PENDING}}


def pending(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The fields of a new order carrying `entries`."""
    return {"audit": entries, "audit_state": PENDING}


# Drops every pending entry: the placement failed (it was never placed, and a cancel
# asked meanwhile did nothing).
DROP_ALL: dict[str, Any] = {"$unset": {"audit": "", "audit_state": ""}}
# Drops the entries of cancels asked of an order that closes otherwise (filled,
# expired): they canceled nothing. (`audit_state` stays: the copier clears it.)
DROP_CANCELS: dict[str, Any] = {"$pull": {"audit": {"action": CANCELED}}}


class OrderAudit:
    """Copies the orders' pending audit entries to the audit log (see the module)."""

    def __init__(
        self,
        orders: AsyncCollection,
        audit: AuditLog,
        is_active: Callable[[], bool],
        *,
        every: float = COPY_EVERY,
        catch_up: float = CATCH_UP_EVERY,
    ) -> None:
        self.orders = orders
        self.audit = audit
        self.is_active = is_active
        self.every = every
        self.catch_up = catch_up
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stop = asyncio.Event()

    def entry(self, action: str, **kw: Any) -> dict[str, Any]:
        return self.audit.entry(action, **kw)

    def nudge(self) -> None:
        """An order with pending entries was let go: copy them within `every`."""
        self._wake.set()

    async def copy(self, limit: int = BATCH) -> int:
        """One round: copy the pending entries of up to `limit` unowned orders.
        Returns how many orders it read."""
        async with self._lock:
            found = [
                order
                async for order in self.orders.find(
                    {"audit_state": PENDING, "owner": None}, {"audit": 1}, limit=limit
                )
            ]
            if not found:
                return 0
            await self.audit.store([e for order in found for e in order.get("audit") or []])
            clear: list[UpdateOne] = []
            for order in found:
                ids = [e["_id"] for e in order.get("audit") or []]
                # Exactly the entries copied: one added since stays pending.
                clear.append(
                    UpdateOne({"_id": order["_id"]}, {"$pull": {"audit": {"_id": {"$in": ids}}}})
                )
                clear.append(
                    UpdateOne({"_id": order["_id"], "audit.0": {"$exists": False}}, DROP_ALL)
                )
            await self.orders.bulk_write(clear, ordered=True)
            return len(found)

    async def drain(self) -> int:
        """Copy every entry that can be copied now (rounds until one finds none).
        Returns how many orders were read."""
        total = 0
        while (read := await self.copy()) == BATCH:
            total += read
        return total + read

    def _leads(self) -> bool:
        return self.is_active() and not self._closing

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if close() is called."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="order-audit-copier")

    async def _run(self) -> None:
        last = float("-inf")
        active = False
        while not self._closing:
            was_active, active = active, self.is_active()
            if active and was_active:
                # At most one round per `every`: what is let go meanwhile joins it.
                await self._pause(last + self.every - time.monotonic())
                # Leadership is asked again right before the round: it may have
                # moved during the wait (copying is idempotent, but a follower's
                # round is not its to run).
                active = self._leads()
            if active:
                self._wake.clear()
                last = time.monotonic()
                try:
                    while await self.copy() == BATCH and self._leads():
                        pass
                except Exception:
                    log.exception("copying the orders' audit entries failed")
            if not active:
                if self._closing:
                    break  # close() drains what is pending
                # A follower checks each `every` whether it leads now (no store
                # command); a nudge while it follows is not its to act on.
                self._wake.clear()
                await self._pause(self.every)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.catch_up)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop; the leader copies what is pending first (within `timeout`)."""
        self._closing = True
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._task), timeout)
            finally:
                # Also when this close is cancelled (a shutdown step cut): the shield
                # must not leave the copier writing after the store is closed.
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.is_active():
            try:
                await asyncio.wait_for(self.drain(), timeout)
            except Exception:
                log.warning("audit entries left pending at shutdown", exc_info=True)
