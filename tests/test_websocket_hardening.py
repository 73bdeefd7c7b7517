"""WebSocket limits over a real uvicorn server: connection_init timeout, keep-alive
pings, message size, origin check, connection and subscription caps, charged starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cryptovault.extensions.persisted import sha256_hex
from tests.conftest import serve
from tests.harness import http, running

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
PRICES = 'subscription { prices(symbols: ["BTC"]) { price } }'


@contextlib.asynccontextmanager
async def server(store_url: str, **overrides: Any) -> AsyncIterator[tuple[str, Any]]:
    async with running(store_url, **overrides) as (app, _), serve(app) as url:
        yield url, app


def socket(url: str, protocol: str = TRANSPORT, **kw: Any):
    return connect(f"ws://{url}/graphql", subprotocols=[protocol], **kw)  # type: ignore[list-item]


async def send(ws: ClientConnection, message: dict) -> None:
    await ws.send(json.dumps(message))


async def receive(ws: ClientConnection, answer_pings: bool = True) -> dict:
    while True:
        message = json.loads(await ws.recv())
        if answer_pings and message["type"] == "ping":
            await send(ws, {"type": "pong"})
            continue
        if message["type"] == "ka":  # the legacy protocol's keep-alive
            continue
        return message


async def init(ws: ClientConnection, token: str | None = None) -> dict:
    payload = {"authorization": f"Bearer {token}"} if token else {}
    await send(ws, {"type": "connection_init", "payload": payload})
    return await receive(ws)


async def close_code(ws: ClientConnection) -> int | None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.recv()
    return ws.close_code


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_sockets_without_connection_init_are_closed(store_server, protocol):
    async with (
        server(store_server.url, ws_init_timeout_seconds=0.2) as (url, _),
        socket(url, protocol) as ws,
    ):
        assert await close_code(ws) == 4408


async def test_clients_that_stop_answering_pings_are_closed(store_server):
    overrides = {"ws_ping_interval_seconds": 0.1, "ws_ping_timeout_seconds": 0.3}
    async with server(store_server.url, **overrides) as (url, _):
        async with socket(url) as silent:
            assert (await init(silent))["type"] == "connection_ack"
            assert (await receive(silent, answer_pings=False))["type"] == "ping"
            assert await close_code(silent) == 4499
        async with socket(url) as alive:
            assert (await init(alive))["type"] == "connection_ack"
            for _ in range(3):  # several ping rounds, each answered
                assert (await receive(alive, answer_pings=False))["type"] == "ping"
                await send(alive, {"type": "pong"})
            query = {"query": "{ rateLimit { limit } }"}
            await send(alive, {"id": "1", "type": "subscribe", "payload": query})
            message = await receive(alive)
            assert message["type"] == "next"
            assert message["payload"]["data"]["rateLimit"]["limit"] == 10_000_000


async def test_messages_over_the_size_limit_close_the_socket(store_server):
    async with (
        server(store_server.url, ws_max_message_bytes=1024) as (url, _),
        socket(url) as ws,
    ):
        assert (await init(ws))["type"] == "connection_ack"
        query = "{ rateLimit { limit } }" + " " * 2000
        await send(ws, {"id": "1", "type": "subscribe", "payload": {"query": query}})
        assert await close_code(ws) == 1009


async def test_origin_check(store_server):
    async with server(store_server.url, cors_origins=("https://app.example.com",)) as (url, _):
        with pytest.raises(InvalidStatus) as refused:
            async with socket(url, origin="https://evil.example.com"):
                pass
        assert refused.value.response.status_code == 403
        for origin in ("https://app.example.com", f"http://{url}", None):
            async with socket(url, origin=origin) as ws:  # type: ignore[arg-type]
                assert (await init(ws))["type"] == "connection_ack"


async def test_connections_per_identity_are_capped(store_server):
    async with server(store_server.url, ws_max_connections_per_identity=2) as (url, _):
        async with socket(url) as one, socket(url) as two, socket(url) as three:
            assert (await init(one, "test:u1"))["type"] == "connection_ack"
            assert (await init(two, "test:u1"))["type"] == "connection_ack"
            await send(
                three, {"type": "connection_init", "payload": {"authorization": "Bearer test:u1"}}
            )
            assert await close_code(three) == 4429
            # Another identity has its own slots.
            async with socket(url) as other:
                assert (await init(other, "test:u2"))["type"] == "connection_ack"
            await one.close()
        # Closed sockets give their slot back (the server notices the close shortly).
        for _ in range(100):
            async with socket(url) as again:
                await send(
                    again,
                    {"type": "connection_init", "payload": {"authorization": "Bearer test:u1"}},
                )
                with contextlib.suppress(ConnectionClosed):
                    if (await receive(again))["type"] == "connection_ack":
                        break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the connection slots were never released")


async def test_live_subscriptions_per_connection_are_capped(store_server):
    async with server(store_server.url, ws_max_subscriptions=2) as (url, _), socket(url) as ws:
        await init(ws)
        for op_id in ("1", "2", "3"):
            await send(ws, {"id": op_id, "type": "subscribe", "payload": {"query": PRICES}})
        message = await receive(ws)
        assert message["type"] == "error" and message["id"] == "3"
        assert message["payload"][0]["extensions"]["code"] == "RATE_LIMITED"


async def test_starting_a_subscription_is_charged(store_server):
    # Each start costs 10 + 1: the third does not fit in 25 points.
    limits = {"cost_budget_anonymous": 25, "max_query_cost": 25}
    async with server(store_server.url, **limits) as (url, app):
        async with socket(url) as ws:
            await init(ws)
            for op_id in ("1", "2", "3"):
                await send(ws, {"id": op_id, "type": "subscribe", "payload": {"query": PRICES}})
            message = await receive(ws)
            assert message["id"] == "3"
            errors = (
                message["payload"] if message["type"] == "error" else message["payload"]["errors"]
            )
            assert errors[0]["extensions"]["code"] == "RATE_LIMITED"
        async with http(app, ip="127.0.0.1") as client:
            body = (
                await client.post("/graphql", json={"query": "{ rateLimit { remaining } }"})
            ).json()
            assert body["data"]["rateLimit"]["remaining"] == 3


@pytest.mark.parametrize(
    "message",
    [
        "[1]",
        '"hello"',
        "not json",
        '{"type": "subscribe", "id": "1", "payload": "x"}',
        '{"type": "subscribe", "id": 5, "payload": {"query": "{ rateLimit { limit } }"}}',
        '{"type": "subscribe", "id": "1", "payload": {"query": 5}}',
        '{"type": "nope"}',
        '{"type": "complete", "id": [1]}',
    ],
)
async def test_malformed_messages_close_with_4400(store_server, message):
    async with server(store_server.url) as (url, _), socket(url) as ws:
        await init(ws)
        await ws.send(message)
        assert await close_code(ws) == 4400


async def test_bad_credentials_close_with_4403(store_server):
    async with server(store_server.url) as (url, _), socket(url) as ws:
        await send(ws, {"type": "connection_init", "payload": {"authorization": "Bearer nope"}})
        assert await close_code(ws) == 4403


async def test_persisted_queries_over_websocket(store_server):
    query = "{ rateLimit { limit } }"
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(query)}}
    async with server(store_server.url) as (url, _), socket(url) as ws:
        await init(ws)
        await send(ws, {"id": "1", "type": "subscribe", "payload": {"extensions": extensions}})
        miss = await receive(ws)
        assert miss["type"] == "error"
        assert miss["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
        payload = {"query": query, "extensions": extensions}
        await send(ws, {"id": "2", "type": "subscribe", "payload": payload})
        assert (await receive(ws))["payload"]["data"]["rateLimit"]["limit"] == 10_000_000
        assert (await receive(ws))["type"] == "complete"
        await send(ws, {"id": "3", "type": "subscribe", "payload": {"extensions": extensions}})
        assert (await receive(ws))["payload"]["data"]["rateLimit"]["limit"] == 10_000_000


async def handled(ws: ClientConnection) -> None:
    """Until the server handles the socket (it answers a ping before connection_init)."""
    await send(ws, {"type": "ping"})
    assert (await receive(ws, answer_pings=False))["type"] == "pong"


async def test_sockets_awaiting_connection_init_are_capped_per_address(store_server):
    # The init timeout is far away: only the per-address cap can refuse a socket.
    limits = {"ws_max_pending_per_ip": 2, "ws_init_timeout_seconds": 60}
    async with (
        server(store_server.url, **limits) as (url, _),
        socket(url) as one,
        socket(url) as two,
    ):
        await handled(one)
        await handled(two)
        async with socket(url) as three:
            assert await close_code(three) == 4429
            assert three.close_reason == "Too many connections awaiting connection_init"
        # A socket that initialises counts for its identity instead: a place frees.
        assert (await init(one))["type"] == "connection_ack"
        async with socket(url) as four:
            await handled(four)
            async with socket(url) as five:
                assert await close_code(five) == 4429
            assert (await init(four, "test:u1"))["type"] == "connection_ack"


class UnreachableStore:
    """An authenticator whose store cannot be reached."""

    async def authenticate(self, request, payload=None):
        raise ConnectionError("store unreachable")

    async def revalidate(self, viewers):
        raise ConnectionError("store unreachable")


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_credentials_that_cannot_be_checked_close_with_try_again_not_4403(
    store_server, protocol
):
    async with running(store_server.url) as (app, services), serve(app) as url:
        services.authenticator = UnreachableStore()
        async with socket(url, protocol) as ws:
            await send(ws, {"type": "connection_init", "payload": {"authorization": "Bearer x"}})
            assert await close_code(ws) == 1013


async def test_the_legacy_protocol_closes_refused_credentials_with_4403(store_server):
    async with server(store_server.url) as (url, _), socket(url, LEGACY) as ws:
        payload = {"authorization": "Bearer nope"}
        await send(ws, {"type": "connection_init", "payload": payload})
        error = await receive(ws)
        assert error["type"] == "connection_error"
        assert error["payload"]["code"] == "UNAUTHENTICATED"
        assert await close_code(ws) == 4403


async def test_the_legacy_protocol_serves_queries_and_mutations(store_server):
    budget = "{ rateLimit { remaining } assets { symbol } }"
    add = 'mutation { addToWatchlist(symbol: "BTC") { symbols } }'
    async with server(store_server.url) as (url, _), socket(url, LEGACY) as ws:
        assert (await init(ws, "test:u1"))["type"] == "connection_ack"
        await send(ws, {"id": "1", "type": "start", "payload": {"query": budget}})
        first = await receive(ws)
        assert first["type"] == "data" and first["id"] == "1"
        assert first["payload"]["extensions"]["cost"]["requestedQueryCost"] >= 1
        assert await receive(ws) == {"type": "complete", "id": "1"}
        await send(ws, {"id": "2", "type": "start", "payload": {"query": budget}})
        second = await receive(ws)
        spent = first["payload"]["data"]["rateLimit"]["remaining"]
        assert second["payload"]["data"]["rateLimit"]["remaining"] < spent  # charged
        assert await receive(ws) == {"type": "complete", "id": "2"}
        await send(ws, {"id": "3", "type": "start", "payload": {"query": add}})
        added = await receive(ws)
        assert added["payload"]["data"]["addToWatchlist"]["symbols"] == ["BTC"]
        assert await receive(ws) == {"type": "complete", "id": "3"}
    async with server(store_server.url) as (url, _), socket(url, LEGACY) as anonymous:
        await init(anonymous)
        await send(anonymous, {"id": "1", "type": "start", "payload": {"query": add}})
        refused = await receive(anonymous)
        assert refused["type"] == "data" and refused["payload"]["data"] is None
        assert refused["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert await receive(anonymous) == {"type": "complete", "id": "1"}
        bad = "{ rateLimit { nope } }"
        await send(anonymous, {"id": "2", "type": "start", "payload": {"query": bad}})
        invalid = await receive(anonymous)
        assert invalid["type"] == "error" and invalid["id"] == "2"
        assert invalid["payload"]["extensions"]["code"] == "BAD_USER_INPUT"
