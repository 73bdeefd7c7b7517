"""The embedded store's write cost against collection size: mongoeco's stock SQLite
engine vs the one the app runs (`cryptovault.db.flat_engine`, without the scans of
every document on each write), through the wire server with pymongo, on a collection
shaped like the ledger (a string `_id`, a sparse unique `slot`, an (account, time)
index). The stock engine stops at 2,000 documents: past that, filling the collection
alone takes minutes. Writes bench/out/embedded.json.

    python -m bench.embedded [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import Decimal128
from pymongo import AsyncMongoClient, IndexModel, ReturnDocument

from bench.common import OUT
from cryptovault.db import EmbeddedServer

SIZES = {"stock": (200, 2000), "flat": (200, 2000, 20_000)}
SAMPLES = 20
INDEXES = [
    IndexModel([("slot", 1)], unique=True, sparse=True, name="slot"),
    IndexModel([("account", 1), ("created_at", -1)], name="account_created"),
]


def entry(n: int) -> dict[str, Any]:
    account = f"user{n % 200}"
    return {
        "_id": f"fill:{n}:0",
        "slot": f"{account}:USD#{n}",
        "account": account,
        "amount": Decimal128("-1.25"),
        "created_at": datetime.now(UTC),
    }


async def measure(engine: str, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    server = EmbeddedServer(Path(tempfile.mkdtemp()), stock=engine == "stock")
    client: AsyncMongoClient = AsyncMongoClient(await server.start())
    rows = []
    try:
        collection = client["bench"]["ledger"]
        await collection.create_indexes(INDEXES)
        filled = 0
        for size in sizes:
            while filled < size:
                batch = [entry(n) for n in range(filled, min(size, filled + 500))]
                await collection.insert_many(batch)
                filled += len(batch)
            row: dict[str, Any] = {"engine": engine, "documents": size}
            started = time.perf_counter()
            for i in range(SAMPLES):
                await collection.insert_one(entry(10**9 + size * 100 + i))
            row["insert_one_ms"] = (time.perf_counter() - started) / SAMPLES * 1000
            started = time.perf_counter()
            for i in range(SAMPLES):
                await collection.find_one_and_update(
                    {"_id": f"fill:{i}:0"},
                    {"$inc": {"amount": Decimal128("0.01")}},
                    return_document=ReturnDocument.AFTER,
                )
            row["find_one_and_update_ms"] = (time.perf_counter() - started) / SAMPLES * 1000
            started = time.perf_counter()
            for i in range(SAMPLES):
                await collection.find_one({"_id": f"fill:{i}:0"})
            row["find_one_ms"] = (time.perf_counter() - started) / SAMPLES * 1000
            rows.append(row)
            print(
                f"| {engine} | {size:,} | {row['insert_one_ms']:.1f} | "
                f"{row['find_one_and_update_ms']:.1f} | {row['find_one_ms']:.1f} |",
                flush=True,
            )
    finally:
        await client.close()
        await server.close()
    return rows


async def run(quick: bool) -> dict[str, Any]:
    print("| engine | documents | insert_one ms | find_one_and_update ms | find_one ms |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for engine, sizes in SIZES.items():
        rows += await measure(engine, sizes[:2] if quick else sizes)
    by = {(r["engine"], r["documents"]): r for r in rows}
    ratios = {
        f"insert_one stock/flat at {n}": by[("stock", n)]["insert_one_ms"]
        / by[("flat", n)]["insert_one_ms"]
        for n in SIZES["stock"]
    }
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.1f}x")
    return {"embedded": rows, "embedded_ratios": ratios}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.quick))
    OUT.mkdir(exist_ok=True)
    (OUT / "embedded.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
