"""Reconciliation: the books must balance.

- trial balance: the ledger sums to zero per asset (each entry does with its house
  lines; entries written before lines existed are legs of balanced movements);
- every cached balance equals its account's entries (total and held), never negative;
- every held amount equals what the account's orders still reserve, in-flight work
  included (a fill whose entries are written but whose order is not updated yet);
- no work is abandoned: an order whose owner's lease ran out is listed until the
  recovery sweep finishes it.

Before comparing, a balance whose numbered entries go beyond what it includes (a
writer died between an entry and the balance update) is brought up to date: that is
the one write reconciliation makes, and what any later change of it would do."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from cryptovault.documents.common import now_ms, to_decimal
from cryptovault.documents.enums import OPEN_STATUSES, OrderStatus
from cryptovault.trading.fills import ledger_changes, work_of
from cryptovault.trading.ledger import Ledger
from cryptovault.trading.rules import OrderState, close_plan

LIVE = (OrderStatus.PENDING, *OPEN_STATUSES)


def _d(value: Any) -> Decimal:
    return to_decimal(value if value is not None else 0)


@dataclass
class Report:
    trial_balance: dict[str, Decimal] = field(default_factory=dict)
    discrepancies: list[str] = field(default_factory=list)
    checked_balances: int = 0
    checked_orders: int = 0

    @property
    def ok(self) -> bool:
        return not self.discrepancies


async def reconcile(db: AsyncDatabase, now: datetime | None = None) -> Report:
    report = Report()
    now = now or now_ms()
    total: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    held: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    numbered: dict[tuple[str, str], int] = defaultdict(int)
    legacy: set[tuple[str, str]] = set()  # balances with entries from before numbering
    trial: dict[str, Decimal] = defaultdict(Decimal)
    written: dict[str, str] = {}  # entry id -> kind
    async for entry in db["ledger"].find({}):
        key = (entry["account"], entry["asset"])
        amount = _d(entry["amount"])
        trial[entry["asset"]] += amount
        total[key] += amount
        written[entry["_id"]] = entry["kind"]
        if entry.get("held_delta") is not None:
            held[key] += _d(entry["held_delta"])
        elif not key[0].startswith("house:"):
            legacy.add(key)
        if entry.get("seq"):
            numbered[key] = max(numbered[key], int(entry["seq"]))
        for line in entry.get("lines") or []:
            trial[line["asset"]] += _d(line["amount"])
            total[(line["account"], line["asset"])] += _d(line["amount"])
    report.trial_balance = dict(sorted(trial.items()))
    for asset, sum_ in report.trial_balance.items():
        if sum_ != 0:
            report.discrepancies.append(f"trial balance of {asset} is {sum_}, not 0")

    reserved: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    async for order in db["orders"].find(
        {"$or": [{"status": {"$in": [s.value for s in LIVE]}}, {"owner": {"$ne": None}}]}
    ):
        key = (order["user_id"], order["hold_asset"])
        lease = order.get("lease_until")
        if order.get("owner") is not None and lease is not None and lease < now:
            report.discrepancies.append(
                f"order {order['_id']} is still owned by {order['owner']} after its lease "
                "ran out (the recovery sweep finishes it)"
            )
        if order["status"] == OrderStatus.PENDING and written.get(f"hold:{order['_id']}") in (
            None,
            "void",
        ):
            continue  # being placed: it reserves once its hold is written (not voided)
        if order["status"] not in LIVE and not order.get("work"):
            continue
        left = _d(order.get("hold_remaining"))
        work = order.get("work")
        request = order.get("close_request")
        if not work and request and order.get("owner") is not None:
            # A close taken with its request recorded (a cancel): its release follows
            # from the order, and may be written already.
            plan = close_plan(OrderState.of(order), OrderStatus(request["status"]), None)
            work = work_of(plan, int(order.get("fills") or 0), now)
        if work:
            # Its entries may be written already, the order not yet updated.
            for change in ledger_changes(order, work):
                if change.id in written and change.asset == order["hold_asset"]:
                    left += change.held
        reserved[key] += left
        report.checked_orders += 1

    ledger: Ledger | None = None
    seen: set[tuple[str, str]] = set()
    async for balance in db["balances"].find({}):
        key = (balance["account"], balance["asset"])
        if numbered.get(key, 0) > int(balance.get("seq") or 0):
            ledger = ledger or Ledger(db["ledger"], db["balances"])
            snap = await ledger.catch_up(*key)
            balance = {**balance, "available": snap.available, "held": snap.held}
        seen.add(key)
        report.checked_balances += 1
        available, held_now = _d(balance["available"]), _d(balance["held"])
        if available < 0 or held_now < 0:
            report.discrepancies.append(
                f"{key[0]} {key[1]}: negative balance {available}/{held_now}"
            )
        if available + held_now != total.get(key, Decimal(0)):
            report.discrepancies.append(
                f"{key[0]} {key[1]}: cached total {available + held_now} != ledger "
                f"{total.get(key, Decimal(0))}"
            )
        if key not in legacy and held_now != held.get(key, Decimal(0)):
            report.discrepancies.append(
                f"{key[0]} {key[1]}: held {held_now} != ledger holds {held.get(key, Decimal(0))}"
            )
        if held_now != reserved.get(key, Decimal(0)):
            report.discrepancies.append(
                f"{key[0]} {key[1]}: held {held_now} != open orders' reservations "
                f"{reserved.get(key, Decimal(0))}"
            )
    for key, sum_ in total.items():
        if key not in seen and not key[0].startswith("house:") and sum_ != 0:
            report.discrepancies.append(f"{key[0]} {key[1]}: ledger {sum_} but no balance")
    for key, amount in reserved.items():
        if key not in seen and amount != 0:
            report.discrepancies.append(f"{key[0]} {key[1]}: orders reserve {amount}, no balance")
    return report


__all__ = ["Report", "reconcile"]
