"""Two real server processes on one store and one Redis. The one that is not the feed
leader is frozen with SIGSTOP in the middle of a burst of orders, for longer than an
order's lease (the leader's recovery sweep takes its orders over meanwhile), then
thawed with SIGCONT: every order is answered without an error, nothing stays owned or
held for nothing, and the books reconcile."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from decimal import Decimal

import httpx
import pytest
from pymongo import AsyncMongoClient

from tests.conftest import LAX_AUTH_LIMITS, PASSWORD, REDIS_URL, free_port
from tests.test_trading_crash import start, wait_ready

pytestmark = pytest.mark.redis

LEASE_SECONDS = 2
PAUSE_SECONDS = 3 * LEASE_SECONDS + 2  # well past the lease and a sweep or two
PLACE = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { id status filledQuantity } }"


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


async def test_a_non_leader_frozen_mid_burst_answers_every_order_and_locks_nothing(tmp_path):
    store_port = free_port()
    store = start(
        ["db", "--port", str(store_port), "--data-dir", str(tmp_path / "store")], {}, tmp_path
    )
    line = await asyncio.to_thread(store.stdout.readline)  # type: ignore[union-attr]
    mongo_url = line.strip().split("=", 1)[1]
    database = f"pause_{uuid.uuid4().hex[:8]}"
    env = {
        "MONGODB_URL": mongo_url,
        "MONGODB_DB": database,
        "REDIS_URL": REDIS_URL,
        "DATA_DIR": str(tmp_path / "data"),
        "TICK_INTERVAL_MS": "100",
        "FEED_SEED": "5",
        "ORDER_LEASE_SECONDS": str(LEASE_SECONDS),
        "TOP_OF_BOOK_USD": "2000",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "256",
        "ARGON2_PARALLELISM": "1",
        "AUTH_RATE_LIMITS": LAX_AUTH_LIMITS,
        "COST_BUDGET": "10000000",
        "LOG_LEVEL": "WARNING",
    }
    leader_url = f"http://127.0.0.1:{(leader_port := free_port())}"
    other_url = f"http://127.0.0.1:{(other_port := free_port())}"
    leader = start(["serve"], {**env, "PORT": str(leader_port)}, tmp_path)
    other = None
    try:
        await wait_ready(leader_url)
        async with httpx.AsyncClient(timeout=120) as http:
            for _ in range(100):  # the first instance holds the feed lease before the other starts
                if metric(
                    (await http.get(f"{leader_url}/metrics")).text, "cryptovault_feed_leader"
                ):
                    break
                await asyncio.sleep(0.1)
            other = start(["serve"], {**env, "PORT": str(other_port)}, tmp_path)
            await wait_ready(other_url)
            assert not metric(
                (await http.get(f"{other_url}/metrics")).text, "cryptovault_feed_leader"
            )

            body = (
                await http.post(
                    f"{other_url}/graphql",
                    json={
                        "query": "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }",
                        "variables": {
                            "i": {"email": f"{database}@example.com", "password": PASSWORD}
                        },
                    },
                )
            ).json()
            headers = {"Authorization": f"Bearer {body['data']['register']['accessToken']}"}
            prices = (
                await http.get(
                    f"{leader_url}/graphql",
                    params={"query": '{ prices(symbols: ["SOL"]) { price } }'},
                )
            ).json()
            price = Decimal(prices["data"]["prices"][0]["price"])

            def order(n: int) -> dict:
                if n % 3 == 0:
                    return {"symbol": "SOL", "side": "BUY", "type": "MARKET", "quantity": "0.5"}
                limit = (price * (Decimal("1.001") - Decimal(n % 7) / 1000)).quantize(
                    Decimal("0.01")
                )
                return {
                    "symbol": "SOL",
                    "side": "BUY",
                    "type": "LIMIT",
                    "quantity": "0.5",
                    "limitPrice": str(limit),
                }

            answered = 0

            async def place(n: int) -> dict:
                nonlocal answered
                response = await http.post(
                    f"{other_url}/graphql",
                    json={"query": PLACE, "variables": {"i": order(n)}},
                    headers=headers,
                )
                answered += 1
                return {"status": response.status_code, **response.json()}

            burst = [asyncio.create_task(place(n)) for n in range(40)]
            while answered < 3:
                await asyncio.sleep(0.005)
            other.send_signal(signal.SIGSTOP)  # frozen mid-burst, orders in its hands
            await asyncio.sleep(PAUSE_SECONDS)
            other.send_signal(signal.SIGCONT)
            answers = await asyncio.gather(*burst)

            errors = [a for a in answers if a["status"] != 200 or a.get("errors")]
            assert not errors, errors[:3]
            assert all(a["data"]["placeOrder"]["id"] for a in answers)
            takeovers = metric(
                (await http.get(f"{leader_url}/metrics")).text,
                "cryptovault_trading_takeovers_total",
            )
            assert takeovers >= 1, "the pause took nothing over: the test did not test a takeover"

        client: AsyncMongoClient = AsyncMongoClient(mongo_url)
        try:
            orders = client[database]["orders"]
            for _ in range(100):  # the leader's sweep finishes what is left (1 s period)
                if not await orders.count_documents({"owner": {"$ne": None}}):
                    break
                await asyncio.sleep(0.1)
            assert not await orders.count_documents({"owner": {"$ne": None}})
            assert not await orders.count_documents({"status": "PENDING"})
        finally:
            await client.close()
        for proc in (leader, other):
            proc.terminate()
            proc.wait(timeout=30)
        check = subprocess.run(
            [sys.executable, "-m", "cryptovault", "reconcile"],
            env={**os.environ, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        for proc in (leader, other, store):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
                proc.wait(timeout=30)
