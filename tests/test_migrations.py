"""Store migrations on the embedded store over the wire: forward, backward and
forward again, recorded in `migrations`, idempotent, locked against concurrent runs,
and the real migration 0001 (candle `end`) doing what retention needs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from bson import Decimal128
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from cryptovault.migrations import (
    COLLECTION,
    LOCK_ID,
    MigrationError,
    applied,
    discover,
    migrate,
    pending,
    plan,
)

ROOT = os.path.dirname(os.path.dirname(__file__))
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(store_server) -> AsyncIterator[AsyncDatabase]:
    client: AsyncMongoClient = AsyncMongoClient(store_server.url, tz_aware=True)
    name = f"test_mig_{uuid.uuid4().hex[:10]}"
    yield client[name]
    await client.drop_database(name)
    await client.close()


def candle(symbol: str, interval: str, start: datetime) -> dict:
    """A candle as the code before migration 0001 wrote it (no `end`)."""
    price = Decimal128("100.5")
    return {
        "_id": f"{symbol}:{interval}:{int(start.timestamp())}",
        "symbol": symbol,
        "interval": interval,
        "start": start,
        "open": price,
        "high": price,
        "low": price,
        "close": price,
        "volume": Decimal128("2"),
        "ticks": 3,
    }


async def seed(db: AsyncDatabase) -> None:
    await db["candles"].insert_many(
        [
            candle("BTC", "1m", START),
            candle("BTC", "1h", START),
            candle("ETH", "1d", START),
        ]
    )


async def ends(db: AsyncDatabase) -> dict[str, datetime | None]:
    return {d["_id"]: d.get("end") async for d in db["candles"].find({})}


async def test_migrate_up_down_and_up_again(db):
    await seed(db)
    steps = await migrate(db)
    assert [(s.direction, s.migration.id) for s in steps][:1] == [("up", "0001_candle_end")]
    assert await ends(db) == {
        f"BTC:1m:{int(START.timestamp())}": START + timedelta(minutes=1),
        f"BTC:1h:{int(START.timestamp())}": START + timedelta(hours=1),
        f"ETH:1d:{int(START.timestamp())}": START + timedelta(days=1),
    }
    assert "interval_end" in await db["candles"].index_information()
    record = (await applied(db))[1]
    assert record["name"] == "candle_end" and record["applied_at"] <= datetime.now(UTC)
    assert await migrate(db) == []  # nothing pending: a second run does nothing

    steps = await migrate(db, 0)
    assert [(s.direction, s.migration.version) for s in steps][-1] == ("down", 1)
    assert set((await ends(db)).values()) == {None}
    assert "interval_end" not in await db["candles"].index_information()
    assert await applied(db) == {}
    assert await db[COLLECTION].find_one({"_id": LOCK_ID}) is None  # released

    await migrate(db)
    assert None not in (await ends(db)).values()
    assert await pending(db) == []


async def test_migrations_are_idempotent_when_cut_off_half_way(db):
    await seed(db)
    first = discover()[0]
    await first.up(db)  # ran, but the run died before recording it
    await first.up(db)
    await migrate(db)  # runs it once more, then records it
    assert len(await ends(db)) == 3 and None not in (await ends(db)).values()
    await first.down(db)
    await first.down(db)
    assert set((await ends(db)).values()) == {None}


async def test_roll_back_by_steps(db):
    await migrate(db)
    latest = len(discover())
    steps = await migrate(db, steps_down=1)
    assert [(s.direction, s.migration.version) for s in steps] == [("down", latest)]
    assert max(await applied(db), default=0) == latest - 1


async def test_a_second_run_is_locked_out_until_the_lock_is_stale(db):
    await db[COLLECTION].insert_one({"_id": LOCK_ID, "holder": "other", "since": datetime.now(UTC)})
    with pytest.raises(MigrationError, match="holds the lock"):
        await migrate(db)
    assert await applied(db) == {}
    # A lock left by a crashed run is taken over.
    await db[COLLECTION].update_one(
        {"_id": LOCK_ID}, {"$set": {"since": datetime.now(UTC) - timedelta(hours=1)}}
    )
    assert await migrate(db)
    assert await db[COLLECTION].find_one({"_id": LOCK_ID}) is None


def test_plan_refuses_a_store_ahead_of_the_code_and_unknown_targets():
    migrations = discover()
    with pytest.raises(MigrationError, match="does not know"):
        plan(migrations, {1, len(migrations) + 1}, len(migrations))
    with pytest.raises(MigrationError, match="no migration"):
        plan(migrations, set(), len(migrations) + 1)


def test_every_migration_is_numbered_in_order_and_described():
    migrations = discover()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.description for m in migrations)


async def test_retention_of_candles_needs_the_migration(services):
    """Pruning keys on `end`: a candle stored before 0001 is pruned only after it."""
    db = services.store.db
    old = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=5)
    await db["candles"].insert_one(candle("LTC", "1m", old))
    await services.market.prune()
    assert await db["candles"].find_one({"symbol": "LTC"}) is not None
    await migrate(db)
    await services.market.prune()
    assert await db["candles"].find_one({"symbol": "LTC"}) is None


async def test_cli_migrates_reports_status_and_rolls_back(store_server):
    env = {
        **os.environ,
        "MONGODB_URL": store_server.url,
        "MONGODB_DB": f"test_cli_mig_{uuid.uuid4().hex[:8]}",
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "WARNING",
    }

    async def run(*args: str) -> subprocess.CompletedProcess:
        # In a thread: the embedded store serves from this process's event loop.
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cryptovault", "migrate", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    async def ok(*args: str) -> str:
        done = await run(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    latest = len(discover())
    assert "pending" in await ok("--status")
    out = await ok()
    assert "up   0001_candle_end" in out and f"at version {latest}" in out
    assert "pending" not in await ok("--status")
    out = await ok("--to", "0")
    assert "down 0001_candle_end" in out and "at version 0" in out
    bad = await run("--to", str(latest + 5))
    assert bad.returncode == 1 and "no migration" in bad.stderr


async def test_migration_0003_gives_live_orders_their_match_key(db):
    """Live orders written before match keys get the key the engine would write;
    closed orders and orders with a key are left alone; the price indexes go."""
    import importlib

    from pymongo import IndexModel

    from cryptovault.trading import matching

    step = importlib.import_module("cryptovault.migrations.0003_order_match_keys")
    orders = db["orders"]
    await orders.create_indexes(
        [
            IndexModel([("symbol", 1), ("status", 1), ("limit_price", 1)], name=name)
            if name.endswith("limit_price")
            else IndexModel([("symbol", 1), ("status", 1), ("stop_price", 1)], name=name)
            for name in step.REPLACED
        ]
    )

    def order(oid: str, status: str, kind: str, side: str, **fields) -> dict:
        return {
            "_id": oid,
            "status": status,
            "type": kind,
            "side": side,
            "symbol": "BTC",
            "limit_price": None,
            "stop_price": None,
            "triggered": False,
            **fields,
        }

    await orders.insert_many(
        [
            order("limit", "OPEN", "LIMIT", "BUY", limit_price=Decimal128("90000.5")),
            order("stop", "PARTIALLY_FILLED", "STOP", "SELL", stop_price=Decimal128("80000")),
            order(
                "fired",
                "OPEN",
                "STOP_LIMIT",
                "BUY",
                limit_price=Decimal128("95000"),
                stop_price=Decimal128("94000"),
                triggered=True,
            ),
            order("market", "PENDING", "MARKET", "BUY"),
            order("closed", "FILLED", "LIMIT", "SELL", limit_price=Decimal128("1")),
            order("keyed", "OPEN", "LIMIT", "SELL", limit_price=Decimal128("2"), match_key="kept"),
        ]
    )
    for _ in range(2):  # idempotent
        await step.up(db)
        keys = {d["_id"]: d.get("match_key") async for d in orders.find({})}
        assert keys == {
            "limit": "B" + matching.price_key(Decimal128("90000.5").to_decimal()),
            "stop": "D" + matching.price_key(Decimal128("80000").to_decimal()),
            "fired": "B" + matching.price_key(Decimal128("95000").to_decimal()),
            "market": "A",
            "closed": None,
            "keyed": "kept",
        }
        assert not set(step.REPLACED) & set(await orders.index_information())
    await step.down(db)
    assert await orders.count_documents({"match_key": {"$exists": True}}) == 0
