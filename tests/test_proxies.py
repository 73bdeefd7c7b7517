"""The client's address, which per-IP budgets and limits key on: X-Forwarded-For is
believed only from TRUSTED_PROXIES, and then only its right-most address that is not
one of them (what a client writes to the left of it is its own invention)."""

from __future__ import annotations

import asyncio
import uuid
from ipaddress import ip_network

import httpx

from tests.conftest import free_port
from tests.harness import gql, http, running
from tests.test_cli import ROOT, spawn, wait_http

SPEND = "{ assets { symbol } }"  # 10 points (one per asset)
REMAINING = "{ rateLimit { remaining } }"  # free


async def remaining(client, forwarded_for: str) -> int:
    body = (await gql(client, REMAINING, headers={"X-Forwarded-For": forwarded_for})).json()
    return body["data"]["rateLimit"]["remaining"]


async def test_cryptovault_serve_believes_no_forwarded_header_by_default(store_server, tmp_path):
    """A local proxy that appends to X-Forwarded-For (or any local process) must not
    let clients pick their own address: uvicorn trusts 127.0.0.1 by default."""
    port = free_port()
    proc = spawn(
        "serve",
        env={
            "ENVIRONMENT": "test",
            "PORT": str(port),
            "MONGODB_URL": store_server.url,
            "MONGODB_DB": f"test_{uuid.uuid4().hex[:12]}",
            "DATA_DIR": str(tmp_path),
            "MARKET_FEED": "none",
            "COST_BUDGET_ANONYMOUS": "1000",
            "PYTHONPATH": str(ROOT),
        },
        cwd=tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert (await wait_http(f"{base}/health")).status_code == 200
        async with httpx.AsyncClient(base_url=base) as client:
            spent = await gql(client, SPEND, headers={"X-Forwarded-For": "203.0.113.1"})
            assert spent.status_code == 200
            # Another forwarded address, the same client (127.0.0.1): the same budget.
            assert await remaining(client, "198.51.100.2") == 990
    finally:
        proc.terminate()
        # In a thread: the store the server talks to runs on this event loop.
        await asyncio.to_thread(proc.communicate, timeout=20)


async def test_trusted_proxies_give_the_right_most_untrusted_address(store_server):
    proxies = (ip_network("10.0.0.1/32"), ip_network("10.1.0.0/16"))
    limits = {"trusted_proxies": proxies, "cost_budget_anonymous": 1000}
    async with (
        running(store_server.url, **limits) as (app, _),
        http(app, ip="10.0.0.1") as proxy,
        http(app, ip="10.0.0.2") as stranger,
    ):
        # The client forged "1.1.1.1"; two trusted proxies appended after the real one.
        chain = "1.1.1.1, 203.0.113.7, 10.1.2.3"
        assert (await gql(proxy, SPEND, headers={"X-Forwarded-For": chain})).status_code == 200
        assert await remaining(proxy, "203.0.113.7") == 990
        assert await remaining(proxy, "1.1.1.1") == 1000
        # From an address that is not a trusted proxy the header means nothing.
        assert await remaining(stranger, "203.0.113.7") == 1000
        assert (await gql(stranger, SPEND, headers={"X-Forwarded-For": "1.1.1.1"})).status_code
        assert await remaining(stranger, "9.9.9.9") == 990
