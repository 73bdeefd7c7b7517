"""The embedded store's write cost against collection size: mongoeco's stock SQLite
engine vs the one the app runs (`cryptovault.db.flat_engine`, the corrections of
`cryptovault/db/mongoeco_compat.py`), through the wire server with pymongo, on a
collection shaped like the ledger (a string `_id`, a sparse unique `slot`, a compound
unique `(account, txn)`, an (account, time) index). Filling it uses insert_many
(`fill docs/s`: the stock server writes each document in a transaction of its own, the
app's one transaction per command). The stock engine stops at 2,000 documents: past
that, filling the collection alone takes minutes. Writes bench/out/embedded.json.

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

SIZES = {"stock": (200, 2000), "flat": (200, 2000, 20_000, 100_000)}
SAMPLES = 20
INDEXES = [
    IndexModel([("slot", 1)], unique=True, sparse=True, name="slot"),
    IndexModel([("account", 1), ("txn", 1)], unique=True, name="account_txn"),
    IndexModel([("account", 1), ("created_at", -1)], name="account_created"),
]


def entry(n: int) -> dict[str, Any]:
    account = f"user{n % 200}"
    return {
        "_id": f"fill:{n}:0",
        "slot": f"{account}:USD#{n}",
        "account": account,
        "txn": f"t{n}",
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
            started = time.perf_counter()
            added = size - filled
            while filled < size:
                batch = [entry(n) for n in range(filled, min(size, filled + 5000))]
                await collection.insert_many(batch)
                filled += len(batch)
            row: dict[str, Any] = {"engine": engine, "documents": size}
            row["fill_docs_per_s"] = added / (time.perf_counter() - started)
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
                await collection.update_one(
                    {"_id": f"fill:{i + SAMPLES}:0"}, {"$set": {"created_at": datetime.now(UTC)}}
                )
            row["update_one_ms"] = (time.perf_counter() - started) / SAMPLES * 1000
            started = time.perf_counter()
            for i in range(SAMPLES):
                await collection.find_one({"_id": f"fill:{i}:0"})
            row["find_one_ms"] = (time.perf_counter() - started) / SAMPLES * 1000
            rows.append(row)
            print(
                f"| {engine} | {size:,} | {row['fill_docs_per_s']:,.0f} | "
                f"{row['insert_one_ms']:.1f} | {row['find_one_and_update_ms']:.1f} | "
                f"{row['update_one_ms']:.1f} | {row['find_one_ms']:.1f} |",
                flush=True,
            )
    finally:
        await client.close()
        await server.close()
    return rows


async def run(quick: bool) -> dict[str, Any]:
    print(
        "| engine | documents | fill docs/s | insert_one ms | find_one_and_update ms | "
        "update_one ms | find_one ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for engine, sizes in SIZES.items():
        rows += await measure(engine, sizes[:2] if quick else sizes)
    by = {(r["engine"], r["documents"]): r for r in rows}
    ratios = {
        f"insert_one stock/flat at {n}": by[("stock", n)]["insert_one_ms"]
        / by[("flat", n)]["insert_one_ms"]
        for n in SIZES["stock"]
    }
    flat = [r for r in rows if r["engine"] == "flat"]
    for op in ("insert_one", "find_one_and_update", "update_one"):
        name = f"{op} flat at {flat[-1]['documents']:,} / at {flat[0]['documents']:,}"
        ratios[name] = flat[-1][f"{op}_ms"] / flat[0][f"{op}_ms"]
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}x")
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
