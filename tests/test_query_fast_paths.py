"""Lists that touch the store cost a fixed number of store round trips per page,
whatever the page size (pymongo command monitoring counts them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from bson import Decimal128

from cryptovault.documents.candles import CandleDocument

CANDLES = """query($first: Int) {
  candles(symbol: "ADA", interval: ONE_MINUTE, first: $first) {
    edges { cursor node { openTime open high low close volume closed } }
    pageInfo { hasNextPage endCursor }
  }
}"""
STORED = 260


@pytest.fixture(scope="module")
async def stored_candles(services) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    price = Decimal128(Decimal("0.5000"))
    docs = [
        {
            "_id": f"ADA:1m:{int((start + timedelta(minutes=i)).timestamp())}",
            "symbol": "ADA",
            "interval": "1m",
            "start": start + timedelta(minutes=i),
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": price,
            "ticks": 1,
        }
        for i in range(STORED)
    ]
    await CandleDocument.get_pymongo_collection().insert_many(docs)


@pytest.mark.parametrize("first", [1, 20, 100, 250])
async def test_a_candles_page_is_one_store_query_cold_and_none_warm(
    gql, services, commands, stored_candles, first
):
    services.market.candle_cache.drop()  # cold: as after a start or a missed message
    for expected in (["find"], []):
        commands.only_this_task()  # not the trading sweep's reads meanwhile
        commands.reset()
        data = await gql.data(CANDLES, {"first": first})
        assert len(data["candles"]["edges"]) == first
        assert data["candles"]["pageInfo"]["hasNextPage"] is True
        assert commands.commands == expected
