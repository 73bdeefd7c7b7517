"""Candles get `end`, the time their interval closes (start + interval).

Retention of closed candles now keys on `end` (a candle goes once its whole interval
is past the retention period) through the (interval, end) index; a candle stored
before this migration has no `end` and would never be pruned, so `up` computes it for
every existing candle. New candles are written with `end` by the market service.
`down` removes the field and the index, for a rollback to code that predates them."""

from __future__ import annotations

import contextlib

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

# The intervals as they were when this migration was written (seconds).
INTERVAL_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
INDEX = "interval_end"


async def up(db: AsyncDatabase) -> None:
    candles = db["candles"]
    for interval, seconds in INTERVAL_SECONDS.items():
        # An update pipeline: the server computes each candle's end from its start.
        await candles.update_many(
            {"interval": interval, "end": {"$exists": False}},
            [{"$set": {"end": {"$add": ["$start", seconds * 1000]}}}],
        )
    await candles.create_index([("interval", 1), ("end", 1)], name=INDEX)


async def down(db: AsyncDatabase) -> None:
    candles = db["candles"]
    with contextlib.suppress(OperationFailure):  # already gone: down is idempotent
        await candles.drop_index(INDEX)
    await candles.update_many({"end": {"$exists": True}}, {"$unset": {"end": ""}})
