"""The authentication cache across instances (two services on one store, one Redis):
a logout on one instance is refused on the other at its next request once the bus
message arrived; a bus reconnect drops everything kept; AUTH_CACHE_SECONDS=0 reads
the credential on every request. (Apart from test_auth_cache.py: each test starts
its own services.)"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from cryptovault.app import create_app
from cryptovault.documents.common import now_ms
from cryptovault.documents.sessions import SessionDocument
from cryptovault.services import start_services
from tests.conftest import REDIS_URL, CommandCounter, GraphQLClient, bearer, sign_up
from tests.test_auth_cache import AUTH_COLLECTIONS, LOGOUT, PING, VIEWER, WAIT, cache_of, reason
from tests.test_socket_revocation_instances import _kill_bus_connection


@contextlib.asynccontextmanager
async def _client(app) -> AsyncIterator[GraphQLClient]:
    transport = httpx.ASGITransport(app=app, client=("10.7.0.3", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield GraphQLClient(http)


@pytest.mark.redis
async def test_a_logout_on_one_instance_is_refused_on_another_at_its_next_request(
    settings, monkeypatch
):
    # No expiry within the test: only the bus can tell instance B.
    shared = replace(settings, redis_url=REDIS_URL, auth_cache_seconds=3600)
    counter = CommandCounter()
    a = await start_services(shared, feed=None)
    b = await start_services(shared, feed=None, event_listeners=[counter])
    try:
        async with (
            _client(create_app(shared, services=a)) as on_a,
            _client(create_app(shared, services=b)) as on_b,
        ):
            owner = await sign_up(on_a)
            user_id, headers = owner["user"]["id"], bearer(owner["accessToken"])
            await on_b.data(PING, headers=headers)
            counter.only_this_task()
            counter.reset()
            assert (await on_b.data(VIEWER, headers=headers))["viewer"]["id"] == user_id
            assert counter.on("sessions", "revoked_tokens") == []  # B answers from its cache

            heard = asyncio.Event()
            invalidate = cache_of(b).invalidate

            def hearing(invalidated: str) -> None:
                invalidate(invalidated)
                if invalidated == user_id:
                    heard.set()

            monkeypatch.setattr(cache_of(b), "invalidate", hearing)
            assert (await on_a.data(LOGOUT, headers=headers))["logout"] is True
            async with asyncio.timeout(WAIT):
                await heard.wait()
            assert reason(await on_b.execute(VIEWER, headers=headers)) == "TOKEN_REVOKED"
    finally:
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_a_bus_reconnect_drops_everything_kept(settings, monkeypatch):
    name = f"cv-test-{uuid.uuid4().hex[:8]}"
    config = replace(settings, redis_url=f"{REDIS_URL}?client_name={name}")
    services = await start_services(config, feed=None)
    try:
        async with _client(create_app(config, services=services)) as gql:
            owner = await sign_up(gql)
            headers = bearer(owner["accessToken"])
            await gql.data(PING, headers=headers)
            cache = cache_of(services)
            assert len(cache) == 1
            ticket = cache.ticket()
            cleared = asyncio.Event()
            clear = cache.clear

            def clearing() -> None:
                clear()
                cleared.set()

            monkeypatch.setattr(cache, "clear", clearing)
            # Revoked behind the bus's back (no message), then the bus drops.
            session_id = services.identity.tokens.decode(owner["accessToken"]).session_id
            await SessionDocument.get_pymongo_collection().update_one(
                {"_id": session_id}, {"$set": {"revoked_at": now_ms()}}
            )
            await _kill_bus_connection(name)
            async with asyncio.timeout(WAIT):
                await cleared.wait()
            assert len(cache) == 0
            # A read from before the reconnect does not fill it either.
            assert not cache.put("t:x", owner["user"]["id"], "state", ticket)
            assert reason(await gql.execute(VIEWER, headers=headers)) == "SESSION_REVOKED"
    finally:
        await services.close()


async def test_with_the_cache_off_every_request_reads_the_credential(settings):
    counter = CommandCounter()
    off = replace(settings, auth_cache_seconds=0)
    services = await start_services(off, feed=None, event_listeners=[counter])
    try:
        async with _client(create_app(off, services=services)) as gql:
            owner = await sign_up(gql)
            await gql.data(PING, headers=bearer(owner["accessToken"]))
            counter.only_this_task()
            counter.reset()
            await gql.data(PING, headers=bearer(owner["accessToken"]))
            assert sorted(counter.on(*AUTH_COLLECTIONS)) == ["find", "find", "find"]
            assert len(cache_of(services)) == 0
    finally:
        await services.close()
