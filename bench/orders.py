"""`placeOrder` throughput and latency on the embedded store, and the store commands
each order costs (the figure that carries over to MongoDB).

The app runs as `python -m bench.servers app` (a child process, the store in its own
process, every asset priced, no feed); this process registers USERS accounts and then,
from one keep-alive connection per account, places orders for DURATION seconds:

- market:  alternately buys and sells 0.001 BTC at market: hold, fill against the
           price, four ledger entries, release; the whole order life in one call;
- limit:   places a BUY limit far below the price (it rests: hold only), then
           cancels it (release): two mutations, reported per mutation.

`--history N` first writes N filled orders of other accounts (with their ledger
entries and trades) into the database: the embedded store's cost per command grows
with collection size, so the same figures at 20,000 orders are the ones that count.

Store commands are read from the app's own `/metrics`
(`cryptovault_store_command_duration_seconds_count`, by command), with what the idle
app issues over the same time (the recovery sweep) subtracted. Server CPU per order
comes from /proc. The floor is `{ ping }` over the same connections: what the HTTP
and GraphQL layers cost before any trading work. Writes bench/out/orders.json.

    python -m bench.orders [--quick] [--duration 5] [--users 16] [--history 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from bson import Decimal128
from pymongo import AsyncMongoClient

from bench.common import OUT, STORE_PIDS, child, cpu_seconds, fmt, free_port, percentile, store
from bench.loadgen import HTTPClient, http_connection, post

PASSWORD = "correct horse battery staple"
REGISTER = "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }"
PLACE = (
    "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) "
    "{ id status filledQuantity averageFillPrice fees } }"
)
CANCEL = "mutation($id: ID!) { cancelOrder(id: $id) { id status } }"
PING = "{ ping }"
# Registration is rate limited per IP for real clients; the bench is one IP.
ENV = {
    "AUTH_RATE_LIMITS": "login=20/minute:10/minute,register=10000/minute:10000/minute,"
    "password_reset=10/hour:3/hour,two_factor=20/minute:5/minute"
}
COMMANDS = re.compile(
    rb'^cryptovault_store_command_duration_seconds_(count|sum)\{command="([^"]+)"\} ([0-9.e+-]+)$',
    re.M,
)


def request(port: int, query: str, variables: dict[str, Any], token: str | None) -> bytes:
    return post("/graphql", orjson.dumps({"query": query, "variables": variables}), port, token)


async def call(client: HTTPClient, raw: bytes) -> dict[str, Any]:
    status, body = await client.request(raw)
    answer = orjson.loads(body)
    if status != 200 or answer.get("errors"):
        raise RuntimeError(f"{status}: {body[:300]!r}")
    return answer["data"]


async def store_commands(client: HTTPClient, port: int) -> dict[str, float]:
    raw = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    status, body = await client.request(raw)
    assert status == 200, body[:200]
    # "find" -> count, "find:s" -> seconds spent (round trip as the app sees it)
    return {
        m[2].decode() + (":s" if m[1] == b"sum" else ""): float(m[3])
        for m in COMMANDS.finditer(body)
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


async def run_mode(
    mode: str, port: int, clients: list[tuple[HTTPClient, str]], duration: float
) -> tuple[list[float], int]:
    """Closed loop on every connection for `duration` s; latencies per mutation."""
    latencies: list[float] = []
    done = 0
    deadline = time.perf_counter() + duration

    async def market(client: HTTPClient, token: str) -> None:
        nonlocal done
        side = "BUY"
        while time.perf_counter() < deadline:
            raw = request(
                port,
                PLACE,
                {"i": {"symbol": "BTC", "side": side, "type": "MARKET", "quantity": "0.001"}},
                token,
            )
            start = time.perf_counter()
            order = (await call(client, raw))["placeOrder"]
            latencies.append(time.perf_counter() - start)
            assert order["status"] == "FILLED", order
            done += 1
            side = "SELL" if side == "BUY" else "BUY"

    async def limit(client: HTTPClient, token: str) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            raw = request(
                port,
                PLACE,
                {
                    "i": {
                        "symbol": "BTC",
                        "side": "BUY",
                        "type": "LIMIT",
                        "quantity": "0.001",
                        "limitPrice": "25000",
                    }
                },
                token,
            )
            start = time.perf_counter()
            order = (await call(client, raw))["placeOrder"]
            latencies.append(time.perf_counter() - start)
            assert order["status"] == "OPEN", order
            start = time.perf_counter()
            canceled = await call(client, request(port, CANCEL, {"id": order["id"]}, token))
            latencies.append(time.perf_counter() - start)
            assert canceled["cancelOrder"]["status"] == "CANCELED", canceled
            done += 2

    async def ping(client: HTTPClient, token: str) -> None:
        nonlocal done
        raw = request(port, PING, {}, token)
        while (start := time.perf_counter()) < deadline:
            await call(client, raw)
            latencies.append(time.perf_counter() - start)
            done += 1

    work = {"market": market, "limit": limit, "ping": ping}[mode]
    await asyncio.gather(*(work(client, token) for client, token in clients))
    return latencies, done


async def write_history(store_url: str, database: str, orders: int) -> None:
    """`orders` filled market buys of 100 other accounts, as the engine writes them:
    each with its hold and two fill entries (numbered per balance) and its trade."""
    client: AsyncMongoClient = AsyncMongoClient(store_url, tz_aware=True)
    db = client[database]
    now = datetime.now(UTC)
    one, price = Decimal128("0.001"), Decimal128("91000")
    seq: dict[str, int] = {}

    def entry(kind: str, oid: str, user: str, asset: str, n: int, amount: str) -> dict[str, Any]:
        key = f"{user}:{asset}"
        seq[key] = seq.get(key, 0) + 1
        return {
            "_id": f"{kind}:{oid}:{n}",
            "txn_id": f"{kind}:{oid}",
            "account": user,
            "asset": asset,
            "amount": Decimal128(amount),
            "available_delta": Decimal128(amount),
            "held_delta": Decimal128("0"),
            "lines": [],
            "slot": f"{key}#{seq[key]}",
            "seq": seq[key],
            "kind": kind,
            "order_id": oid,
            "created_at": now,
        }

    for start in range(0, orders, 1000):
        batch, entries, trades = [], [], []
        for n in range(start, min(orders, start + 1000)):
            oid, user = f"history{n:08d}", f"history-user-{n % 100}"
            batch.append(
                {
                    "_id": oid,
                    "user_id": user,
                    "idempotency_key": f"order:{oid}",
                    "symbol": "BTC",
                    "side": "BUY",
                    "type": "MARKET",
                    "time_in_force": "GTC",
                    "quantity": one,
                    "status": "FILLED",
                    "filled_quantity": one,
                    "spent_quote": Decimal128("91"),
                    "fee_basis": Decimal128("0.182"),
                    "fees": Decimal128("0.19"),
                    "hold_asset": "USD",
                    "hold_remaining": Decimal128("0"),
                    "fills": 1,
                    "owner": None,
                    "fence": 1,
                    "lease_until": None,
                    "work": None,
                    "close_request": None,
                    "triggered": False,
                    "history": [],
                    "created_at": now,
                    "updated_at": now,
                }
            )
            entries += [
                entry("hold", oid, user, "USD", 0, "0"),
                entry("fill", oid, user, "USD", 0, "-91.19"),
                entry("fill", oid, user, "BTC", 1, "0.001"),
            ]
            trades.append(
                {
                    "_id": f"{oid}:0",
                    "order_id": oid,
                    "user_id": user,
                    "symbol": "BTC",
                    "side": "BUY",
                    "quantity": one,
                    "price": price,
                    "fee": Decimal128("0.19"),
                    "liquidity": "TAKER",
                    "created_at": now,
                }
            )
        await db["orders"].insert_many(batch)
        await db["ledger"].insert_many(entries)
        await db["trades"].insert_many(trades)
    await client.close()


async def measure(store_url: str, duration: float, users: int, history: int = 0) -> dict[str, Any]:
    port = free_port()
    rows: list[dict[str, Any]] = []
    env = {**ENV, "BENCH_DB": f"bench_{time.monotonic_ns()}"}
    with child(["app", "--store", store_url], port, env=env) as pid:
        if history:  # after the app made its indexes, as it would have found them
            started = time.perf_counter()
            await write_history(store_url, env["BENCH_DB"], history)
            print(f"wrote {history:,} orders of history in {time.perf_counter() - started:.0f} s")
        admin = await http_connection(port)
        clients: list[tuple[HTTPClient, str]] = []
        for n in range(users):
            email = f"bench-{n}-{time.monotonic_ns()}@example.com"
            data = await call(
                admin,
                request(port, REGISTER, {"i": {"email": email, "password": PASSWORD}}, None),
            )
            clients.append((await http_connection(port), data["register"]["accessToken"]))
        # Warm-up: every path once per connection, caches filled.
        await run_mode("market", port, clients, 0.5)
        await run_mode("limit", port, clients, 0.5)

        before = await store_commands(admin, port)
        await asyncio.sleep(duration)
        idle = delta(await store_commands(admin, port), before)
        idle_total = sum(v for k, v in idle.items() if not k.endswith(":s"))

        for mode in ("ping", "market", "limit"):
            before = await store_commands(admin, port)
            cpu0, store0 = cpu_seconds(pid), cpu_seconds(STORE_PIDS[store_url])
            started = time.perf_counter()
            latencies, done = await run_mode(mode, port, clients, duration)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(pid) - cpu0
            store_cpu = cpu_seconds(STORE_PIDS[store_url]) - store0
            used = delta(await store_commands(admin, port), before)
            idle_share = idle_total * elapsed / duration
            counts = {k: v for k, v in used.items() if not k.endswith(":s")}
            n = max(1, done)
            rows.append(
                {
                    "mode": mode,
                    "connections": users,
                    "mutations": done,
                    "per_s": done / elapsed,
                    "p50_ms": percentile(latencies, 50) * 1000,
                    "p99_ms": percentile(latencies, 99) * 1000,
                    "cpu_ms_per_mutation": cpu / n * 1000,
                    "store_cpu_ms_per_mutation": store_cpu / n * 1000,
                    "store_commands_per_mutation": max(0.0, sum(counts.values()) - idle_share) / n,
                    "by_command": {k: round(v / n, 2) for k, v in sorted(counts.items())},
                    # mean round trip per command, as the app waits for it
                    "store_ms_by_command": {
                        k: round(used.get(f"{k}:s", 0.0) / v * 1000, 2)
                        for k, v in sorted(counts.items())
                    },
                }
            )
        for client, _ in [(admin, ""), *clients]:
            if client.transport is not None:
                client.transport.close()
    return {
        "orders": rows,
        "history_orders": history,
        "idle_store_commands_per_s": idle_total / duration,
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| mode | conns | mutations/s | p50 ms | p99 ms | app CPU ms | store CPU ms | store cmds | "
        "per mutation: command x mean round trip |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["orders"]:
        by = (
            ", ".join(
                f"{k} {v:g} x {r['store_ms_by_command'][k]:g} ms"
                for k, v in r["by_command"].items()
            )
            or "—"
        )
        lines.append(
            f"| {r['mode']} | {r['connections']} | {fmt(r['per_s'], 0)} | {fmt(r['p50_ms'])} | "
            f"{fmt(r['p99_ms'])} | {fmt(r['cpu_ms_per_mutation'], 2)} | "
            f"{fmt(r['store_cpu_ms_per_mutation'], 2)} | "
            f"{fmt(r['store_commands_per_mutation'])} | {by} |"
        )
    lines.append(
        f"\nIdle app: {results['idle_store_commands_per_s']:.1f} store commands/s "
        "(subtracted from the store figures)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per mode")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=16, help="accounts = connections")
    parser.add_argument("--history", type=int, default=0, help="filled orders written first")
    args = parser.parse_args(argv)
    duration = 2.0 if args.quick else args.duration
    with store() as store_url:
        results = asyncio.run(measure(store_url, duration, args.users, args.history))
    print(table(results))
    OUT.mkdir(exist_ok=True)
    (OUT / "orders.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
