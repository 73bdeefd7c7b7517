"""Reconciliation: the books must balance.

- trial balance: the ledger entries of every asset sum to zero;
- every cached balance (available + held) equals the sum of its account's entries;
- every user's held amount equals what its open orders still reserve."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from cryptovault.documents.common import to_decimal

OPEN = ("PENDING", "OPEN", "PARTIALLY_FILLED")


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


async def reconcile(db: AsyncDatabase) -> Report:
    report = Report()
    per_account: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    trial: dict[str, Decimal] = defaultdict(Decimal)
    async for entry in db["ledger"].find({}, {"account": 1, "asset": 1, "amount": 1}):
        amount = _d(entry["amount"])
        trial[entry["asset"]] += amount
        per_account[(entry["account"], entry["asset"])] += amount
    report.trial_balance = dict(sorted(trial.items()))
    for asset, total in report.trial_balance.items():
        if total != 0:
            report.discrepancies.append(f"trial balance of {asset} is {total}, not 0")

    reserved: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    async for order in db["orders"].find({"status": {"$in": list(OPEN)}}):
        key = (order["user_id"], order["hold_asset"])
        if order["status"] == "PENDING":
            # Being placed: it reserves only once its hold went through.
            balance = await db["balances"].find_one({"_id": f"{key[0]}:{key[1]}"})
            applied = {a["id"] for a in (balance or {}).get("applied", [])}
            if f"hold:{order['_id']}" not in applied:
                continue
        reserved[key] += _d(order.get("hold_remaining"))
        report.checked_orders += 1
    async for order in db["orders"].find({"pending_fill": {"$ne": None}}, {"_id": 1}):
        report.discrepancies.append(f"order {order['_id']} has an unfinished fill")

    seen: set[tuple[str, str]] = set()
    async for balance in db["balances"].find({}):
        key = (balance["account"], balance["asset"])
        seen.add(key)
        report.checked_balances += 1
        available, held = _d(balance["available"]), _d(balance["held"])
        if available < 0 or held < 0:
            report.discrepancies.append(f"{key[0]} {key[1]}: negative balance {available}/{held}")
        if available + held != per_account.get(key, Decimal(0)):
            report.discrepancies.append(
                f"{key[0]} {key[1]}: cached total {available + held} != ledger "
                f"{per_account.get(key, Decimal(0))}"
            )
        if held != reserved.get(key, Decimal(0)):
            report.discrepancies.append(
                f"{key[0]} {key[1]}: held {held} != open orders' reservations "
                f"{reserved.get(key, Decimal(0))}"
            )
    for key, total in per_account.items():
        if key not in seen and not key[0].startswith("house:") and total != 0:
            report.discrepancies.append(f"{key[0]} {key[1]}: ledger {total} but no balance")
    for key, amount in reserved.items():
        if key not in seen and amount != 0:
            report.discrepancies.append(f"{key[0]} {key[1]}: orders reserve {amount}, no balance")
    return report
