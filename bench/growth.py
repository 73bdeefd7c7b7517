"""History grows: what `placeOrder` and the store's writes cost with 100, 2,000 and
20,000 orders already in the store. The embedded engine's cost per write grew with
collection size (DESIGN "The store"); these figures must stay flat.

1. `placeOrder` over HTTP (bench.orders: market and limit+cancel modes, 16
   connections) on a fresh store seeded with N filled orders of other accounts, their
   ledger entries and trades, bulk-inserted straight into the store (not through the
   API: 20,000 orders through the API would take longer than the bench).
2. The orders collection alone, with the app's own indexes, through the wire server,
   at 100, 2,000, 20,000 and 100,000 documents (one collection per size, seeded with
   bulk inserts, measured in interleaved rounds): insert_one, a fenced
   find_one_and_update (the engine's every write to an order), an update_one by
   `_id`, and the tick matcher's read (only the orders a tick crosses, by match key)
   against the filter it used before (Decimal128 price ranges: not served by an index
   on the embedded store) and a read of every open order.

    python -m bench.growth [--quick] [--sizes 100,2000,20000]
        [--write-sizes 100,2000,20000,100000] [--rounds 7] [--only writes,orders]

Writes bench/out/growth.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bson import Decimal128
from pymongo import AsyncMongoClient, ReturnDocument

from bench import orders
from bench.common import OUT, fmt, store
from cryptovault.db import EmbeddedServer
from cryptovault.documents.trading import OrderDocument
from cryptovault.market.assets import ASSETS
from cryptovault.market.ticks import quote
from cryptovault.trading import matching

SIZES = (100, 2000, 20_000)
WRITE_SIZES = (100, 2000, 20_000, 100_000)
SAMPLES = 20
ROUNDS = 7
SEED_BATCH = 5000


async def place_orders(sizes: tuple[int, ...], duration: float) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        with store() as store_url:  # a fresh store per size
            started = time.perf_counter()
            result = await orders.measure(store_url, duration, 16, size)
            total = time.perf_counter() - started
        for row in result["orders"]:
            rows.append({"history": size, **row, "run_s": total})
    return rows


def order(n: int, now: datetime, resting: bool = False) -> dict[str, Any]:
    doc = {
        "_id": f"order{n:09d}",
        "user_id": f"user-{n % 100}",
        "idempotency_key": f"order:order{n:09d}",
        "symbol": "BTC",
        "side": "BUY",
        "type": "LIMIT",
        "time_in_force": "GTC",
        "quantity": Decimal128("0.001"),
        "limit_price": Decimal128(Decimal(40_000 + n % 1000)),
        "stop_price": None,
        "expires_at": None,
        "status": "OPEN" if resting else "FILLED",
        "triggered": False,
        "owner": None,
        "fence": 1,
        "created_at": now,
        "updated_at": now,
    }
    return {**doc, "match_key": matching.match_key_of(doc)}


def price_filter(tick: Any, now: datetime) -> dict[str, Any]:
    """The matcher's filter before match keys (ranges over the Decimal128 prices)."""
    ask, bid, last = Decimal128(tick.ask), Decimal128(tick.bid), Decimal128(tick.price)
    limits: list[dict[str, Any]] = [{"type": "LIMIT"}, {"type": "STOP_LIMIT", "triggered": True}]
    return {
        "$or": [
            {"type": "MARKET"},
            {"type": "STOP", "triggered": True},
            *({"side": "BUY", "limit_price": {"$gte": ask}, **kind} for kind in limits),
            *({"side": "SELL", "limit_price": {"$lte": bid}, **kind} for kind in limits),
            *(
                {"type": kind, "triggered": {"$ne": True}, "side": side, "stop_price": bound}
                for kind in ("STOP", "STOP_LIMIT")
                for side, bound in (("BUY", {"$lte": last}), ("SELL", {"$gte": last}))
            ),
            {"time_in_force": "GTD", "expires_at": {"$lte": now}},
        ]
    }


async def seed(collection: Any, size: int, now: datetime) -> float:
    """`size` orders (one in ten resting) in batches: one `insert` command each, which
    the embedded engine writes in one transaction. Seconds taken."""
    started = time.perf_counter()
    for first in range(0, size, SEED_BATCH):
        await collection.insert_many(
            [
                order(n, now, resting=n % 10 == 0)
                for n in range(first, min(size, first + SEED_BATCH))
            ]
        )
    return time.perf_counter() - started


async def store_writes(sizes: tuple[int, ...], rounds: int = ROUNDS) -> list[dict[str, Any]]:
    """One collection per size in one wire server, measured in interleaved rounds (each
    round times every operation at every size), so a load change on the machine hits
    all sizes alike; the figure per size is the median round."""
    server = EmbeddedServer(Path(tempfile.mkdtemp(prefix="bench-growth-")))
    client: AsyncMongoClient = AsyncMongoClient(await server.start(), tz_aware=True)
    now = datetime.now(UTC)
    tick = quote(ASSETS["BTC"], Decimal(91_000), Decimal(1), "bench")
    crossing = {
        "symbol": "BTC",
        "status": {"$in": ["OPEN", "PARTIALLY_FILLED"]},
        "owner": None,
        **matching.crossing(tick, now),
    }
    every_open = {k: v for k, v in crossing.items() if k != "$or"}
    by_price = {**every_open, **price_filter(tick, now)}
    rows: dict[int, dict[str, Any]] = {}
    timings: dict[int, dict[str, list[float]]] = {size: {} for size in sizes}
    try:
        collections = {size: client["bench"][f"orders_{size}"] for size in sizes}
        for size, collection in collections.items():
            await collection.create_indexes(OrderDocument.Settings.indexes)
            took = await seed(collection, size, now)
            rows[size] = {"documents": size, "seed_s": took, "seed_docs_per_s": size / took}
            print(f"seeded {size:,} orders in {took:.1f} s", flush=True)
        fresh = 0

        async def insert_one(collection: Any, size: int) -> None:
            nonlocal fresh
            fresh += 1
            await collection.insert_one(order(10**8 + fresh, now))

        async def fenced(collection: Any, size: int) -> None:
            n = (fresh * 7919) % size  # spread over the collection
            await collection.find_one_and_update(
                {"_id": f"order{n:09d}", "fence": {"$gte": 1}},
                {"$inc": {"fence": 1}, "$set": {"updated_at": now}},
                return_document=ReturnDocument.AFTER,
            )

        async def update_one(collection: Any, size: int) -> None:
            n = (fresh * 104729) % size
            await collection.update_one({"_id": f"order{n:09d}"}, {"$set": {"updated_at": now}})

        async def matcher(collection: Any, size: int) -> None:
            rows[size]["matcher_documents"] = len(
                await collection.find(crossing).sort([("created_at", 1)]).to_list()
            )

        async def previous(collection: Any, size: int) -> None:
            rows[size]["price_filter_documents"] = len(
                await collection.find(by_price).sort([("created_at", 1)]).to_list()
            )

        async def all_open(collection: Any, size: int) -> None:
            rows[size]["all_open_documents"] = len(
                await collection.find(every_open).sort([("created_at", 1)]).to_list()
            )

        operations = {
            "insert_one": insert_one,
            "find_one_and_update": fenced,
            "update_one": update_one,
            "matcher_read": matcher,
            "price_filter_read": previous,
            "all_open_read": all_open,
        }
        for _ in range(rounds):
            for size, collection in collections.items():
                for name, operation in operations.items():
                    samples = SAMPLES if name.endswith("_one") or "update" in name else 3
                    started = time.perf_counter()
                    for _ in range(samples):
                        await operation(collection, size)
                    took = (time.perf_counter() - started) / samples * 1000
                    timings[size].setdefault(name, []).append(took)
    finally:
        await client.close()
        await server.close()
    smallest = sizes[0]
    for size in sizes:
        for name, values in timings[size].items():
            rows[size][f"{name}_ms"] = statistics.median(values)
    for size in sizes:
        row = rows[size]
        for name in ("insert_one", "find_one_and_update", "update_one"):
            row[f"{name}_ratio"] = row[f"{name}_ms"] / rows[smallest][f"{name}_ms"]
        row["resting_orders"] = (size + 9) // 10
        print(
            f"| {size:,} | {row['seed_s']:.1f} ({row['seed_docs_per_s']:,.0f}/s) | "
            f"{row['insert_one_ms']:.2f} ({row['insert_one_ratio']:.2f}x) | "
            f"{row['find_one_and_update_ms']:.2f} ({row['find_one_and_update_ratio']:.2f}x) | "
            f"{row['update_one_ms']:.2f} ({row['update_one_ratio']:.2f}x) | "
            f"{row['matcher_read_ms']:.1f} ({row['matcher_documents']} docs) | "
            f"{row['price_filter_read_ms']:.1f} ({row['price_filter_documents']} docs) | "
            f"{row['all_open_read_ms']:.1f} ({row['all_open_documents']:,} docs) |",
            flush=True,
        )
    return [rows[size] for size in sizes]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| orders in store | mode | mutations/s | p50 ms | p99 ms | store cmds | "
        "store CPU ms | per mutation: command x mean round trip |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        by = ", ".join(
            f"{k} {v:g} x {r['store_ms_by_command'][k]:g} ms" for k, v in r["by_command"].items()
        )
        lines.append(
            f"| {r['history']:,} | {r['mode']} | {fmt(r['per_s'], 0)} | {fmt(r['p50_ms'])} | "
            f"{fmt(r['p99_ms'])} | {fmt(r['store_commands_per_mutation'])} | "
            f"{fmt(r['store_cpu_ms_per_mutation'], 2)} | {by or '—'} |"
        )
    return "\n".join(lines)


async def run(
    sizes: tuple[int, ...],
    write_sizes: tuple[int, ...],
    duration: float,
    only: set[str],
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "writes" in only:
        print(
            "| orders (1 in 10 resting) | bulk seed s | insert_one ms | fenced "
            "find_one_and_update ms | update_one ms | matcher read ms: by match key | "
            "by price (before) | every open order |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        results["growth_writes"] = await store_writes(write_sizes, rounds)
    if "orders" in only:
        results["growth_orders"] = await place_orders(sizes, duration)
        print(table(results["growth_orders"]))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per mode")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="orders in store")
    parser.add_argument(
        "--write-sizes", help="documents per collection (default 100,...,100000; --quick 100,2000)"
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds (writes)")
    parser.add_argument("--only", default="writes,orders", help="writes, orders or both")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    only = set(args.only.split(","))
    write_sizes = (
        tuple(int(s) for s in args.write_sizes.split(","))
        if args.write_sizes
        else (WRITE_SIZES[:2] if args.quick else WRITE_SIZES)
    )
    duration = 2.0 if args.quick else args.duration
    results = asyncio.run(run(sizes, write_sizes, duration, only, args.rounds))
    OUT.mkdir(exist_ok=True)
    (OUT / "growth.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
