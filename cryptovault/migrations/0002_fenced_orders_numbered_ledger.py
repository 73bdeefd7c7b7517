"""Orders get a fencing token; balances count the numbered ledger entries they include.

Before: a balance remembered the ids of its last 64 changes (`applied`) to apply each
once; holds and releases were not ledger entries; a crashed fill or release was found
by `pending_fill` / `release_due` and finished by a sweep that trusted timeouts. Now
every change of a balance is a ledger entry with a deterministic id and a number
(`seq`), the balance records the number it includes, and orders are owned and fenced
(`owner`, `fence`, `lease_until`).

`up` settles what the previous version left in flight, the way its own sweep did:
- an order cut off before its hold (PENDING): opened if the balance recorded its hold
  (`hold:<id>` among `applied`), else rejected holding nothing;
- a closed order still holding funds: released (a numbered `release:<id>` entry),
  unless the balance recorded that release already;
then gives every balance `seq: 0` (its entries so far are not numbered) and drops
`applied`, and every order `fence: 0`. A fill cut off half-way (`pending_fill`)
cannot be finished without the previous version's code: `up` refuses until there is
none (start the previous version once: its sweep finishes them within seconds).

`down` is refused once numbered entries exist: the previous version cannot read them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson import Decimal128
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from cryptovault.migrations import MigrationError

CLOSED = ["FILLED", "CANCELED", "EXPIRED", "REJECTED"]


def _applied(balance: dict[str, Any] | None, op_id: str) -> bool:
    return any(item.get("id") == op_id for item in (balance or {}).get("applied", []))


async def up(db: AsyncDatabase) -> None:
    orders, balances, ledger = db["orders"], db["balances"], db["ledger"]
    cut = await orders.count_documents({"pending_fill": {"$type": "object"}})
    if cut:
        raise MigrationError(
            f"{cut} order(s) have a fill cut off half-way by the previous version: start "
            "that version once so its recovery sweep finishes them, then migrate"
        )
    now = datetime.now(UTC)
    async for order in orders.find({"status": "PENDING", "fence": {"$exists": False}}):
        balance = await balances.find_one({"_id": f"{order['user_id']}:{order['hold_asset']}"})
        change: dict[str, Any]
        if _applied(balance, f"hold:{order['_id']}"):
            change = {"status": "OPEN"}
        else:
            change = {
                "status": "REJECTED",
                "reject_reason": "interrupted",
                "hold_remaining": Decimal128(Decimal(0)),
            }
        await orders.update_one(
            {"_id": order["_id"], "status": "PENDING"},
            {"$set": change, "$push": {"history": {"status": change["status"], "at": now}}},
        )
    async for order in orders.find(
        {"status": {"$in": CLOSED}, "hold_remaining": {"$gt": Decimal128(Decimal(0))}}
    ):
        bid = f"{order['user_id']}:{order['hold_asset']}"
        balance = await balances.find_one({"_id": bid})
        left = order["hold_remaining"].to_decimal()
        if not _applied(balance, f"release:{order['_id']}"):
            await _release(ledger, balances, bid, order, left, now)
        await orders.update_one(
            {"_id": order["_id"]},
            {"$set": {"hold_remaining": Decimal128(Decimal(0)), "release_due": None}},
        )
    await balances.update_many({"seq": {"$exists": False}}, {"$set": {"seq": 0}})
    await balances.update_many({"applied": {"$exists": True}}, {"$unset": {"applied": ""}})
    await orders.update_many({"fence": {"$exists": False}}, {"$set": {"fence": 0}})


async def _release(
    ledger: Any, balances: Any, bid: str, order: dict[str, Any], amount: Decimal, now: datetime
) -> None:
    """A numbered release entry, then the balance moved past it (as trading/ledger.py)."""
    balance = await balances.find_one({"_id": bid}) or {}
    seq = int(balance.get("seq") or 0) + 1
    try:
        await ledger.insert_one(
            {
                "_id": f"release:{order['_id']}",
                "slot": f"{bid}#{seq}",
                "seq": seq,
                "txn_id": f"release:{order['_id']}",
                "account": order["user_id"],
                "asset": order["hold_asset"],
                "amount": Decimal128(Decimal(0)),
                "available_delta": Decimal128(amount),
                "held_delta": Decimal128(-amount),
                "lines": [],
                "balance_after": None,
                "kind": "release",
                "order_id": order["_id"],
                "trade_id": None,
                "created_at": now,
            }
        )
    except DuplicateKeyError:
        return  # written by an earlier run of this migration, which moved the balance
    await balances.update_one(
        {"_id": bid, "seq": {"$in": [seq - 1, None]}},
        {
            "$set": {"seq": seq},
            "$inc": {"available": Decimal128(amount), "held": Decimal128(-amount)},
        },
    )


async def down(db: AsyncDatabase) -> None:
    if await db["ledger"].count_documents({"lines": {"$exists": True}}, limit=1):
        raise MigrationError(
            "the ledger has entries the previous version cannot read: restore the backup "
            "taken before migrating instead"
        )
    await db["balances"].update_many({}, {"$unset": {"seq": ""}})
    await db["orders"].update_many({}, {"$unset": {"fence": ""}})
