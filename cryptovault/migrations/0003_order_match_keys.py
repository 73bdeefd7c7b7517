"""Live orders get a `match_key`; the matcher's price indexes become one key index.

The tick matcher read every open order of a symbol on the embedded store: its filter
ranged over `limit_price` / `stop_price` (Decimal128), which mongoeco cannot range
over through an index. It now filters on `match_key`, a string that sorts as the
price an order waits for (trading.matching.match_key), through the
`(symbol, status, match_key)` index: on MongoDB as on the embedded store, one index
range per branch of the filter.

`up` gives every live order (PENDING, OPEN, PARTIALLY_FILLED) without one its key,
conditionally (an order whose stop triggers meanwhile is written with its new key by
the engine and is left alone), and drops the two price indexes the new one replaces.
Until it has run, the matcher reads keyless open orders on every tick (a branch of
its filter), as before: nothing is missed. Closed orders need no key.

`down` removes the keys and the new indexes; the previous version recreates its own
indexes when it starts. Both can be run again after a cut.
"""

from __future__ import annotations

import contextlib

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from cryptovault.trading.matching import match_key_of

LIVE = ["PENDING", "OPEN", "PARTIALLY_FILLED"]
REPLACED = ("symbol_status_limit_price", "symbol_status_stop_price")
ADDED = ("symbol_status_match_key", "symbol_status_expiry")


async def up(db: AsyncDatabase) -> None:
    orders = db["orders"]
    fields = {"type": 1, "side": 1, "limit_price": 1, "stop_price": 1, "triggered": 1}
    async for order in orders.find({"status": {"$in": LIVE}, "match_key": None}, fields):
        triggered = bool(order.get("triggered"))
        await orders.update_one(
            {
                "_id": order["_id"],
                "match_key": None,
                "triggered": True if triggered else {"$ne": True},
            },
            {"$set": {"match_key": match_key_of(order)}},
        )
    for name in REPLACED:
        with contextlib.suppress(OperationFailure):  # dropped already
            await orders.drop_index(name)


async def down(db: AsyncDatabase) -> None:
    orders = db["orders"]
    await orders.update_many({"match_key": {"$exists": True}}, {"$unset": {"match_key": ""}})
    for name in ADDED:
        with contextlib.suppress(OperationFailure):
            await orders.drop_index(name)
