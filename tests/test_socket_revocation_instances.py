"""Revocation across instances (two services on one store, one Redis): a key revoked
through instance A ends the private stream of a socket held by instance B; and an
instance that missed the message (its Redis connection dropped) finds out on
reconnecting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import redis.asyncio as aioredis

from cryptovault.app import create_app
from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.documents.common import now_ms
from cryptovault.services import Services, start_services
from cryptovault.trading.engine import orders_topic
from tests.conftest import REDIS_URL, GraphQLClient, bearer, serve, sign_up
from tests.wsclient import Socket, error_of

pytestmark = pytest.mark.redis

ORDERS = "subscription { orderUpdates { id status } }"
CREATE_KEY = """mutation { createApiKey(name: "bot", scopes: [PORTFOLIO_READ, TRADE]) {
  key apiKey { id } } }"""
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"
WAIT = 10.0
log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def client(app) -> AsyncIterator[GraphQLClient]:
    transport = httpx.ASGITransport(app=app, client=("10.7.0.2", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield GraphQLClient(http)


async def listening(services: Services, topic: str) -> None:
    async with asyncio.timeout(WAIT):
        while services.hub.subscriber_count(topic) == 0:
            await asyncio.sleep(0.01)


async def key_socket(url: str, services: Services, gql: GraphQLClient) -> tuple[Socket, dict]:
    """A socket on `url` authenticated with a new API key, subscribed to orderUpdates."""
    owner = await sign_up(gql)
    created = (await gql.data(CREATE_KEY, headers=bearer(owner["accessToken"])))["createApiKey"]
    socket = await Socket.open(url)
    assert (await socket.init({"x-api-key": created["key"]}))["type"] == "connection_ack"
    await socket.start("orders", ORDERS)
    await listening(services, orders_topic(owner["user"]["id"]))
    return socket, {**created, "owner": owner}


async def test_a_key_revoked_on_one_instance_ends_the_stream_on_another(settings):
    shared = replace(settings, redis_url=REDIS_URL)
    a = await start_services(shared, feed=None)
    b = await start_services(shared, feed=None)
    try:
        app_a, app_b = create_app(shared, services=a), create_app(shared, services=b)
        async with client(app_a) as gql_a, serve(app_b) as url_b:
            socket, key = await key_socket(url_b, b, gql_a)
            token = key["owner"]["accessToken"]
            started = time.perf_counter()
            await gql_a.data(REVOKE_KEY, {"id": key["apiKey"]["id"]}, headers=bearer(token))
            message = await socket.receive("orders")
            elapsed = time.perf_counter() - started
            log.info("revoked on A, stream ended on B after %.1f ms", elapsed * 1000)
            assert error_of(message)["extensions"] == {
                "code": "UNAUTHENTICATED",
                "reason": "API_KEY_REVOKED",
            }
            assert (await socket.receive("orders"))["type"] == "complete"
            assert (await socket.closed())[0] == 4403
            assert elapsed < 5  # generous for a loaded machine; measured in milliseconds
    finally:
        await a.close()
        await b.close()


async def _kill_bus_connection(client_name: str) -> None:
    """Drop the instance's pub/sub connection (and only it) from the Redis side."""
    admin = aioredis.from_url(REDIS_URL)
    try:
        clients = await admin.client_list(_type="pubsub")
        ids = [c["id"] for c in clients if c.get("name") == client_name]
        assert ids, "the instance's pub/sub connection was not found"
        for client_id in ids:
            await admin.client_kill_filter(_id=client_id)
    finally:
        await admin.aclose()


async def test_an_instance_that_missed_a_revocation_finds_out_when_it_reconnects(settings):
    # No periodic re-read within the test: only the reconnect can find the revocation.
    name = f"cv-test-{uuid.uuid4().hex[:8]}"
    config = replace(
        settings,
        redis_url=f"{REDIS_URL}?client_name={name}",
        ws_credential_recheck_seconds=3600,
    )
    services = await start_services(config, feed=None)
    try:
        app = create_app(config, services=services)
        async with client(app) as gql, serve(app) as url:
            socket, key = await key_socket(url, services, gql)
            # Revoked behind the bus's back: no audit entry, so no message.
            await ApiKeyDocument.get_pymongo_collection().update_one(
                {"_id": key["apiKey"]["id"]}, {"$set": {"revoked_at": now_ms()}}
            )
            await _kill_bus_connection(name)
            message = await socket.receive("orders")
            assert error_of(message)["extensions"]["reason"] == "API_KEY_REVOKED"
            assert (await socket.closed())[0] == 4403
    finally:
        await services.close()
