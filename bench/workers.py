"""`cryptovault serve --workers N` scaling: `{ ping }` and `prices` over HTTP against
the real command with 1 and 2 workers, on Redis and a `cryptovault db` store.

    python -m bench.workers [--rounds 3] [--seconds 5] [--connections 16]

Rounds alternate 1 and 2 workers (a fresh server each time) and each side keeps its
best; the ratio is what to read on a shared machine. The load generator (this
process), the store and the workers share the machine's cores: on 2 cores, two
workers compete with the load generator for them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from typing import Any

import orjson

from bench.common import ROOT, UNLIMITED, free_port, percentile, store, wait_for_port
from bench.loadgen import closed_loop, post

QUERIES = {"ping": "{ ping }", "prices": "{ prices { symbol price } }"}
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def serve(workers: int, port: int, store_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **UNLIMITED,
        "PYTHONPATH": str(ROOT),
        "ENVIRONMENT": "test",
        "MONGODB_URL": store_url,
        "MONGODB_DB": f"bench_{uuid.uuid4().hex[:8]}",
        "REDIS_URL": REDIS_URL,
        "PORT": str(port),
        "MARKET_FEED": "simulated",
        "LOG_LEVEL": "WARNING",
        # The secrets a test configuration generates go here, not into ./data.
        "DATA_DIR": tempfile.mkdtemp(prefix="bench-workers-"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cryptovault", "serve", "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def measure(
    workers: int, store_url: str, seconds: float, connections: int
) -> list[dict[str, Any]]:
    port = free_port()
    process = serve(workers, port, store_url)
    rows = []
    try:
        wait_for_port(port, process)
        for name, query in QUERIES.items():
            raw = post("/graphql", orjson.dumps({"query": query}), port)
            # Warm-up: long enough for every worker to have started and served.
            await closed_loop(port, raw, connections, 3.0)
            latencies, errors = await closed_loop(port, raw, connections, seconds)
            rows.append(
                {
                    "query": name,
                    "workers": workers,
                    "connections": connections,
                    "rps": len(latencies) / seconds,
                    "p50_ms": percentile(latencies, 50) * 1000,
                    "p99_ms": percentile(latencies, 99) * 1000,
                    "errors": errors,
                }
            )
    finally:
        process.terminate()
        process.wait(30)
    return rows


async def run(rounds: int, seconds: float, connections: int) -> None:
    best: dict[tuple[str, int], dict[str, Any]] = {}
    with store() as store_url:
        for r in range(rounds):
            for workers in (1, 2):
                for row in await measure(workers, store_url, seconds, connections):
                    print(
                        f"round {r + 1} {row['query']:<7} workers {workers} "
                        f"{row['rps']:>8,.0f} req/s  p50 {row['p50_ms']:.2f} ms  "
                        f"p99 {row['p99_ms']:.2f} ms  errors {row['errors']}",
                        flush=True,
                    )
                    key = (row["query"], workers)
                    if key not in best or row["rps"] > best[key]["rps"]:
                        best[key] = row
    print("\n| query | workers | req/s (best round) | p50 / p99 ms | x 1 worker |")
    print("|---|---:|---:|---:|---:|")
    for name in QUERIES:
        one = best[(name, 1)]["rps"]
        for workers in (1, 2):
            row = best[(name, workers)]
            print(
                f"| `{name}` | {workers} | {row['rps']:,.0f} | {row['p50_ms']:.2f} / "
                f"{row['p99_ms']:.2f} | {row['rps'] / one:.2f} |"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    asyncio.run(run(args.rounds, args.seconds, args.connections))


if __name__ == "__main__":
    main()
