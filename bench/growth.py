"""History grows: what `placeOrder` and the store's writes cost with 100, 2,000 and
20,000 orders already in the store. The embedded engine's cost per write grew with
collection size (DESIGN "The store"); these figures must stay flat.

1. `placeOrder` over HTTP (bench.orders: market and limit+cancel modes, 16
   connections) on a fresh store seeded with N filled orders of other accounts, their
   ledger entries and trades, bulk-inserted straight into the store (not through the
   API: 20,000 orders through the API would take longer than the bench).
2. The orders collection alone, with the app's own indexes, through the wire server:
   insert_one, a fenced find_one_and_update (the engine's every write to an order),
   and the tick matcher's read (only the orders a tick crosses) at the same sizes.

    python -m bench.growth [--quick] [--sizes 100,2000,20000] [--only writes,orders]

Writes bench/out/growth.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
SAMPLES = 20


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
    return {
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


async def store_writes(sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    server = EmbeddedServer(Path(tempfile.mkdtemp(prefix="bench-growth-")))
    client: AsyncMongoClient = AsyncMongoClient(await server.start(), tz_aware=True)
    rows = []
    try:
        collection = client["bench"]["orders"]
        await collection.create_indexes(OrderDocument.Settings.indexes)
        now = datetime.now(UTC)
        tick = quote(ASSETS["BTC"], Decimal(91_000), Decimal(1), "bench")
        filled = 0
        for size in sizes:
            started = time.perf_counter()
            while filled < size:
                # One in ten rests far below the price: the matcher must skip them.
                batch = [
                    order(n, now, resting=n % 10 == 0)
                    for n in range(filled, min(size, filled + 1000))
                ]
                await collection.insert_many(batch)
                filled += len(batch)
            row: dict[str, Any] = {"documents": size, "seed_s": time.perf_counter() - started}
            started = time.perf_counter()
            for i in range(SAMPLES):
                await collection.insert_one(order(10**8 + size * 100 + i, now))
            row["insert_one_ms"] = (time.perf_counter() - started) / SAMPLES * 1000
            started = time.perf_counter()
            for i in range(SAMPLES):
                await collection.find_one_and_update(
                    {"_id": f"order{i:09d}", "fence": {"$gte": 1}},
                    {"$inc": {"fence": 1}, "$set": {"updated_at": now}},
                    return_document=ReturnDocument.AFTER,
                )
            row["find_one_and_update_ms"] = (time.perf_counter() - started) / SAMPLES * 1000
            query = {
                "symbol": "BTC",
                "status": {"$in": ["OPEN", "PARTIALLY_FILLED"]},
                "owner": None,
                **matching.crossing(tick, now),
            }
            started = time.perf_counter()
            for _ in range(SAMPLES):
                found = await collection.find(query).sort([("created_at", 1)]).to_list()
            row["matcher_read_ms"] = (time.perf_counter() - started) / SAMPLES * 1000
            row["matcher_documents"] = len(found)
            every_open = {k: v for k, v in query.items() if k != "$or"}
            started = time.perf_counter()
            for _ in range(SAMPLES):
                everything = await collection.find(every_open).sort([("created_at", 1)]).to_list()
            # What the matcher read before it filtered by price: every open order.
            row["all_open_read_ms"] = (time.perf_counter() - started) / SAMPLES * 1000
            row["all_open_documents"] = len(everything)
            row["resting_orders"] = (size + 9) // 10
            rows.append(row)
            print(
                f"| {size:,} | {row['seed_s']:.1f} | {row['insert_one_ms']:.1f} | "
                f"{row['find_one_and_update_ms']:.1f} | {row['matcher_read_ms']:.1f} "
                f"({row['matcher_documents']} docs) | {row['all_open_read_ms']:.1f} "
                f"({row['all_open_documents']:,} docs) |",
                flush=True,
            )
    finally:
        await client.close()
        await server.close()
    return rows


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


async def run(sizes: tuple[int, ...], duration: float, only: set[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "writes" in only:
        print(
            "| orders (1 in 10 resting) | seed s | insert_one ms | find_one_and_update ms | "
            "matcher read: crossing only | before: every open order |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        results["growth_writes"] = await store_writes(sizes)
    if "orders" in only:
        results["growth_orders"] = await place_orders(sizes, duration)
        print(table(results["growth_orders"]))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per mode")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--only", default="writes,orders", help="writes, orders or both")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    only = set(args.only.split(","))
    results = asyncio.run(run(sizes, 2.0 if args.quick else args.duration, only))
    OUT.mkdir(exist_ok=True)
    (OUT / "growth.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
