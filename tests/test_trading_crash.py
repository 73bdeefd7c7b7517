"""Kill -9 in the middle of trading, restart, and the books still reconcile: no fill
twice, no hold orphaned. Real processes: a shared `cryptovault db` store and
`cryptovault serve` with the simulated feed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from decimal import Decimal

import httpx
from pymongo import AsyncMongoClient

from tests.conftest import PASSWORD, free_port
from tests.test_cli import spawn, wait_http


def start(args: list[str], env: dict[str, str], cwd) -> subprocess.Popen:
    # CRASH_LOG=<file> keeps the servers' logs for debugging.
    return spawn(*args, env=env, cwd=cwd, stderr=open(os.environ.get("CRASH_LOG", os.devnull), "a"))


async def wait_ready(url: str) -> None:
    for _ in range(300):
        if (await wait_http(f"{url}/ready")).status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("server did not become ready")


PLACE = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status } }"


async def test_a_killed_server_leaves_reconciled_books_after_restart(tmp_path):
    store_port = free_port()
    store = start(
        ["db", "--port", str(store_port), "--data-dir", str(tmp_path / "store")], {}, tmp_path
    )
    line = await asyncio.to_thread(store.stdout.readline)  # type: ignore[union-attr]
    mongo_url = line.strip().split("=", 1)[1]
    port = free_port()
    env = {
        "MONGODB_URL": mongo_url,
        "MONGODB_DB": "crash",
        "PORT": str(port),
        "DATA_DIR": str(tmp_path / "data"),
        "TICK_INTERVAL_MS": "50",
        "FEED_SEED": "11",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "256",
        "ARGON2_PARALLELISM": "1",
        "LOG_LEVEL": "WARNING",
        "TOP_OF_BOOK_USD": "2000",  # small: orders fill over several ticks
        # Orders the killed server owned are taken over this long after it took them.
        "ORDER_LEASE_SECONDS": "2",
    }
    url = f"http://127.0.0.1:{port}"
    server = start(["serve"], env, tmp_path)
    try:
        await wait_ready(url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            body = (
                await http.post(
                    "/graphql",
                    json={
                        "query": "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }",
                        "variables": {"i": {"email": "crash@example.com", "password": PASSWORD}},
                    },
                )
            ).json()
            token = body["data"]["register"]["accessToken"]
            headers = {"Authorization": f"Bearer {token}"}
            prices = (
                await http.get(
                    "/graphql", params={"query": '{ prices(symbols: ["SOL"]) { price } }'}
                )
            ).json()
            price = Decimal(prices["data"]["prices"][0]["price"])

            done = 0

            async def order(n: int) -> None:
                nonlocal done
                fields: dict = {"symbol": "SOL", "side": "BUY", "quantity": "5"}
                if n % 2:
                    fields.update(type="MARKET")
                else:
                    # Limits around the price: some rest, some fill on later ticks.
                    limit = (price * (Decimal("1.002") - Decimal(n % 5) / 1000)).quantize(
                        Decimal("0.01")
                    )
                    fields.update(type="LIMIT", limitPrice=str(limit))
                try:
                    await http.post(
                        "/graphql",
                        json={"query": PLACE, "variables": {"i": fields}},
                        headers=headers,
                    )
                    done += 1
                except httpx.TransportError:
                    pass  # the server died under us: exactly the point

            tasks = [asyncio.create_task(order(n)) for n in range(16)]
            # Kill while orders are still being placed and filled.
            while done < 4:
                await asyncio.sleep(0.01)
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=10)
            await asyncio.gather(*tasks)

        server = start(["serve"], env, tmp_path)
        await wait_ready(url)
        # The restarted server's sweep takes over what the killed one owned once the
        # lease ran out, and finishes it; meanwhile ticks match.
        await asyncio.sleep(5)
        server.terminate()
        server.wait(timeout=30)

        check = subprocess.run(
            [sys.executable, "-m", "cryptovault", "reconcile"],
            env={**os.environ, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        client = AsyncMongoClient(mongo_url)
        try:
            db = client["crash"]
            orders = await db["orders"].find({}).to_list()
            trades = await db["trades"].find({}).to_list()
        finally:
            await client.close()
        assert orders, "no order was placed before the kill"
        per_order = Counter(t["order_id"] for t in trades)
        for o in orders:
            assert o["owner"] is None and o["work"] is None
            assert per_order.get(o["_id"], 0) == o["fills"]
            filled = sum(
                (t["quantity"].to_decimal() for t in trades if t["order_id"] == o["_id"]),
                Decimal(0),
            )
            assert filled == o["filled_quantity"].to_decimal()
            assert o["status"] != "PENDING"
    finally:
        for proc in (server, store):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
