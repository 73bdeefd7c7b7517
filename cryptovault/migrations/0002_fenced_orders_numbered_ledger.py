"""Orders get a fencing token; balances count the numbered ledger entries they include.

Before: a balance remembered the ids of its last 64 changes (`applied`) to apply each
once; holds and releases were not ledger entries; a crashed fill or release was found
by `pending_fill` / `release_due` and finished by a sweep that trusted timeouts. Now
every change of a balance is a ledger entry with a deterministic id and a number
(`seq`), the balance records the number it includes, and orders are owned and fenced
(`owner`, `fence`, `lease_until`).

`up` settles what the previous version left in flight, the way its own sweep did,
but without trusting the 64-id window where it cannot be trusted:
- an order cut off before its hold (PENDING): opened if the balance recorded its hold
  (`hold:<id>` among `applied`: a hold is always recent when its order is PENDING),
  else rejected holding nothing; an IOC or FOK is never opened (it cannot be decided
  any more): it is canceled, like a live IOC or FOK the previous version left open;
- closed orders still holding funds: whether their release happened is read from the
  balance itself: its `held` minus what live orders reserve is what is still due. If
  that equals what the closed orders hold, each is released (a numbered `release:<id>`
  entry); if it is zero, they were released already; otherwise `up` refuses and
  reports the balance (nothing guessed, nothing written for it);
then gives every balance `seq: 0` (its entries so far are not numbered) and drops
`applied`, and every order `fence: 0`. A fill cut off half-way (`pending_fill`)
cannot be finished without the previous version's code: `up` refuses until there is
none (start the previous version once: its sweep finishes them within seconds).
Every step can be run again after a cut.

`down` is refused once numbered entries exist: the previous version cannot read them.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson import Decimal128
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from cryptovault.migrations import MigrationError

CLOSED = ["FILLED", "CANCELED", "EXPIRED", "REJECTED"]
OPEN = ["OPEN", "PARTIALLY_FILLED"]
IMMEDIATE = ["IOC", "FOK"]
ZERO = Decimal128(Decimal(0))


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
    interrupted = "interrupted before it could fill"
    async for order in orders.find({"status": "PENDING", "fence": {"$exists": False}}):
        balance = await balances.find_one({"_id": f"{order['user_id']}:{order['hold_asset']}"})
        change: dict[str, Any]
        if not _applied(balance, f"hold:{order['_id']}"):
            change = {"status": "REJECTED", "reject_reason": "interrupted", "hold_remaining": ZERO}
        elif order.get("time_in_force") in IMMEDIATE:
            change = {"status": "CANCELED", "reject_reason": interrupted}
        else:
            change = {"status": "OPEN"}
        await orders.update_one(
            {"_id": order["_id"], "status": "PENDING"},
            {"$set": change, "$push": {"history": {"status": change["status"], "at": now}}},
        )
    await orders.update_many(
        {"status": {"$in": OPEN}, "time_in_force": {"$in": IMMEDIATE}, "fence": {"$exists": False}},
        {
            "$set": {"status": "CANCELED", "reject_reason": interrupted},
            "$push": {"history": {"status": "CANCELED", "at": now}},
        },
    )
    due: dict[str, list[dict[str, Any]]] = defaultdict(list)
    async for order in orders.find({"status": {"$in": CLOSED}, "hold_remaining": {"$gt": ZERO}}):
        due[f"{order['user_id']}:{order['hold_asset']}"].append(order)
    for bid, closed in due.items():
        user, _, asset = bid.rpartition(":")
        live = Decimal(0)
        async for order in orders.find(
            {"user_id": user, "hold_asset": asset, "status": {"$in": OPEN}}
        ):
            live += order["hold_remaining"].to_decimal()
        balance = await balances.find_one({"_id": bid}) or {}
        excess = _dec(balance.get("held")) - live
        owed = sum((o["hold_remaining"].to_decimal() for o in closed), Decimal(0))
        if excess == owed:
            for order in closed:
                await _release(
                    ledger, balances, bid, order, order["hold_remaining"].to_decimal(), now
                )
        elif excess != 0:
            raise MigrationError(
                f"balance {bid} holds {excess} beyond its open orders, but its closed orders "
                f"still hold {owed}: it cannot be told which were released; fix it by hand "
                "(an admin adjustment) and migrate again"
            )
        await orders.update_many(
            {"_id": {"$in": [o["_id"] for o in closed]}},
            {"$set": {"hold_remaining": ZERO, "release_due": None}},
        )
    await balances.update_many({"seq": {"$exists": False}}, {"$set": {"seq": 0}})
    await balances.update_many({"applied": {"$exists": True}}, {"$unset": {"applied": ""}})
    await orders.update_many({"fence": {"$exists": False}}, {"$set": {"fence": 0}})


def _dec(value: Any) -> Decimal:
    return value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value or 0))


async def _release(
    ledger: Any, balances: Any, bid: str, order: dict[str, Any], amount: Decimal, now: datetime
) -> None:
    """A numbered release entry, then the balance moved past it (as trading/ledger.py
    does): the entry takes the number after the balance's; a number taken by an entry
    the balance does not include yet (a cut earlier run) is applied first."""
    entry_id = f"release:{order['_id']}"
    while True:
        balance = await balances.find_one({"_id": bid}) or {}
        seq = int(balance.get("seq") or 0)
        found = await ledger.find_one({"slot": f"{bid}#{seq + 1}"})
        if found is None:
            if await ledger.find_one({"_id": entry_id}, {"_id": 1}):
                return  # written and applied by an earlier run
            if _dec(balance.get("held")) < amount:
                raise MigrationError(f"balance {bid} holds less than order {order['_id']}")
            found = {
                "_id": entry_id,
                "slot": f"{bid}#{seq + 1}",
                "seq": seq + 1,
                "txn_id": entry_id,
                "account": order["user_id"],
                "asset": order["hold_asset"],
                "amount": ZERO,
                "available_delta": Decimal128(amount),
                "held_delta": Decimal128(-amount),
                "lines": [],
                "balance_after": None,
                "kind": "release",
                "order_id": order["_id"],
                "trade_id": None,
                "created_at": now,
            }
            try:
                await ledger.insert_one(found)
            except DuplicateKeyError:
                continue  # the number or the id was taken meanwhile: look again
        await balances.update_one(
            {"_id": bid, "seq": {"$in": [seq, None]} if seq == 0 else seq},
            {
                "$set": {"seq": seq + 1},
                "$inc": {
                    "available": Decimal128(_dec(found["available_delta"])),
                    "held": Decimal128(_dec(found["held_delta"])),
                },
            },
        )
        if found["_id"] == entry_id:
            return


async def down(db: AsyncDatabase) -> None:
    if await db["ledger"].count_documents({"lines": {"$exists": True}}, limit=1):
        raise MigrationError(
            "the ledger has entries the previous version cannot read: restore the backup "
            "taken before migrating instead"
        )
    await db["balances"].update_many({}, {"$unset": {"seq": ""}})
    await db["orders"].update_many({}, {"$unset": {"fence": ""}})
