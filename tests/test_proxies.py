"""The client's address, which per-IP budgets and limits key on: X-Forwarded-For is
believed only from TRUSTED_PROXIES, and then only its right-most address that is not
one of them (what a client writes to the left of it is its own invention)."""

from __future__ import annotations

import asyncio
import uuid
from ipaddress import ip_network

import httpx
import pytest

from tests.conftest import free_port
from tests.harness import gql, http, running
from tests.test_cli import ROOT, spawn, wait_http
from tests.test_rate_limits import FakeClock

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


@pytest.fixture
def still_clock(monkeypatch):
    """The budget's clock held at the start of a window: a count read after a spend is
    the spend itself, not a count weighted down by a window that ended in between."""
    monkeypatch.setattr("limits.aio.storage.memory.time", FakeClock(6000.0))


async def test_trusted_proxies_give_the_right_most_untrusted_address(store_server, still_clock):
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


# One subscriber's /64 (what an ISP hands out), and addresses rotated inside it.
SAME_64 = ("2001:db8:1:2::1", "2001:db8:1:2:abcd:ef01:2345:6789")
NEXT_64 = "2001:db8:1:3::1"
LOGIN = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }"


async def left(client) -> int:
    return (await gql(client, REMAINING)).json()["data"]["rateLimit"]["remaining"]


async def test_ipv6_clients_share_their_64_and_mapped_ipv4_is_the_ipv4(store_server, still_clock):
    async with running(store_server.url, cost_budget_anonymous=1000) as (app, _):
        async with (
            http(app, ip=SAME_64[0]) as first,
            http(app, ip=SAME_64[1]) as rotated,
            http(app, ip=NEXT_64) as neighbour,
        ):
            assert (await gql(first, SPEND)).status_code == 200
            assert await left(rotated) == 990
            assert await left(neighbour) == 1000
        async with (
            http(app, ip="::ffff:203.0.113.5") as mapped,
            http(app, ip="203.0.113.5") as plain,
        ):
            assert (await gql(mapped, SPEND)).status_code == 200
            assert await left(plain) == 990


async def test_sign_in_limits_and_lockout_count_an_ipv6_client_by_its_64(store_server):
    from cryptovault.documents.users import LoginAttemptDocument
    from tests.harness import codes

    limits = "login=2/minute:100/minute,register=9/hour:9/hour,"
    limits += "password_reset=9/hour:9/hour,two_factor=9/minute:9/minute"
    async with running(store_server.url, auth_rate_limits=limits) as (app, _):
        attempt = {"i": {"email": "nobody@example.com", "password": "wrong password!"}}
        for ip in SAME_64:
            async with http(app, ip=ip) as client:
                body = (await gql(client, LOGIN, attempt)).json()
                assert codes(body) == ["UNAUTHENTICATED"]
        # The lockout's address bucket holds both failures under one key.
        assert await LoginAttemptDocument.find({"ip": "2001:db8:1:2::/64"}).count() == 2
        async with http(app, ip="2001:db8:1:2::99") as third:
            body = (await gql(third, LOGIN, attempt)).json()
            assert codes(body) == ["RATE_LIMITED"]
            assert body["errors"][0]["extensions"]["scope"] == "ip"
        async with http(app, ip=NEXT_64) as neighbour:
            assert codes((await gql(neighbour, LOGIN, attempt)).json()) == ["UNAUTHENTICATED"]


async def test_a_proxy_on_a_dual_stack_socket_is_trusted_by_its_ipv4(store_server):
    """A proxy seen as ::ffff:10.0.0.1 (an IPv6 socket accepting IPv4) is the 10.0.0.1
    of TRUSTED_PROXIES, and so is a hop it wrote in that form."""
    limits = {"trusted_proxies": (ip_network("10.0.0.0/24"),), "cost_budget_anonymous": 1000}
    async with (
        running(store_server.url, **limits) as (app, _),
        http(app, ip="::ffff:10.0.0.1") as proxy,
    ):
        chain = "203.0.113.7, ::ffff:10.0.0.2"
        assert (await gql(proxy, SPEND, headers={"X-Forwarded-For": chain})).status_code
        assert await remaining(proxy, "203.0.113.7") == 990
        assert await remaining(proxy, "::ffff:203.0.113.7") == 990
        assert await remaining(proxy, "198.51.100.1") == 1000


async def test_websocket_caps_per_address_count_an_ipv6_client_by_its_64(store_server):
    from websockets.asyncio.client import connect

    from tests.conftest import serve
    from tests.test_websocket_hardening import close_code, handled, init

    limits = {
        "trusted_proxies": (ip_network("127.0.0.1/32"),),
        "ws_max_pending_per_ip": 1,
        "ws_max_connections_per_identity": 1,
        "ws_init_timeout_seconds": 60,
    }

    def socket(url: str, client: str):
        return connect(
            f"ws://{url}/graphql",
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            additional_headers={"X-Forwarded-For": client},
        )

    async with (
        running(store_server.url, **limits) as (app, _),
        serve(app) as url,
        socket(url, SAME_64[0]) as one,
        socket(url, NEXT_64) as neighbour,
    ):
        await handled(one)
        await handled(neighbour)
        async with socket(url, SAME_64[1]) as rotated:
            assert await close_code(rotated) == 4429  # awaiting connection_init
        assert (await init(one))["type"] == "connection_ack"
        async with socket(url, SAME_64[1]) as rotated:
            await handled(rotated)
            # Anonymous sockets count for their address: the /64 holds one already.
            await rotated.send('{"type": "connection_init", "payload": {}}')
            assert await close_code(rotated) == 4429


def test_sessions_and_audit_keep_the_exact_address_limits_count_the_64():
    from cryptovault.security.origin import Origin

    assert Origin(ip="2001:DB8:1:2::1").ip == "2001:db8:1:2::1"
    assert Origin(ip="2001:db8:1:2::1").ip_key == "2001:db8:1:2::/64"
    assert Origin(ip="::ffff:203.0.113.5").ip == Origin(ip="::ffff:203.0.113.5").ip_key
    assert Origin(ip="::ffff:203.0.113.5").ip == "203.0.113.5"
    assert Origin(ip=None).ip_key is None
