"""WebSocket authentication: connection_init credentials, refused tokens (close 4403),
and private subscriptions that end when the access token expires."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cryptovault.errors import Unauthenticated
from cryptovault.security.origin import Origin
from cryptovault.security.viewer import Viewer, while_valid
from tests.conftest import sign_up

EVENTS = "subscription { securityEvents { action userId details } }"
WAIT = 10  # seconds: a bound for a message that should come, never an assertion


async def open_socket(live_url: str, payload: dict | None, protocol: str = "graphql-transport-ws"):
    ws = await connect(f"ws://{live_url}/graphql", subprotocols=[protocol])
    await ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
    return ws


async def receive(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def close_code(ws) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    return closed.value.rcvd.code


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def subscribed(services, topic: str) -> None:
    """Wait (bounded) until the server-side subscription is listening."""
    async with asyncio.timeout(WAIT):
        while services.hub.subscriber_count(topic) == 0:
            await asyncio.sleep(0.01)


@pytest.fixture
async def member(gql):
    return await sign_up(gql)


@pytest.mark.parametrize("kind", ["garbage", "alg_none", "other_key", "expired", "not_bearer"])
async def test_a_bad_token_rejects_the_connection_with_4403(live_url, member, services, kind):
    claims = claims_of(member["accessToken"])
    if kind == "garbage":
        token = "Bearer garbage"
    elif kind == "alg_none":
        parts = [
            base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=").decode()
            for p in ({"alg": "none", "typ": "JWT"}, claims)
        ]
        token = f"Bearer {parts[0]}.{parts[1]}."
    elif kind == "other_key":
        token = "Bearer " + jwt.encode(claims, "z" * 48, algorithm="HS256")
    elif kind == "expired":
        old = services.identity.tokens.issue(
            claims["sub"], "USER", claims["sid"], now=datetime.now(UTC) - timedelta(hours=1)
        )
        token = f"Bearer {old.token}"
    else:
        token = member["accessToken"]
    ws = await open_socket(live_url, {"authorization": token})
    assert await close_code(ws) == 4403


async def test_the_legacy_protocol_refuses_a_bad_token_too(live_url):
    ws = await open_socket(live_url, {"authorization": "Bearer garbage"}, "graphql-ws")
    message = await receive(ws)
    assert message["type"] == "connection_error"
    assert message["payload"]["code"] == "UNAUTHENTICATED"
    assert message["payload"]["reason"] == "TOKEN_INVALID"
    assert await close_code(ws) == 4403  # as on graphql-transport-ws (Strawberry: 1011)


async def test_private_subscriptions_need_a_viewer(live_url):
    ws = await open_socket(live_url, None)
    assert (await receive(ws))["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": EVENTS}}))
    message = await receive(ws)
    errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
    assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    await ws.close()


async def test_security_events_stream_to_the_signed_in_viewer(live_url, member, services):
    ws = await open_socket(live_url, {"authorization": f"Bearer {member['accessToken']}"})
    assert (await receive(ws))["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": EVENTS}}))
    user_id = member["user"]["id"]
    await subscribed(services, f"security:{user_id}")
    await services.audit.record("test.other_user", actor=None, user_id="someone-else")
    await services.audit.record(
        "auth.login.succeeded", actor=user_id, origin=Origin(ip="203.0.113.9"), details={"x": 1}
    )
    message = await receive(ws)
    assert message["type"] == "next"
    assert message["payload"]["data"]["securityEvents"] == {
        "action": "auth.login.succeeded",
        "userId": user_id,
        "details": {"x": 1},
    }
    await ws.close()


async def test_a_private_subscription_ends_when_the_token_expires(live_url, member, services):
    claims = claims_of(member["accessToken"])
    short = services.identity.tokens.issue(
        claims["sub"], "USER", claims["sid"], ttl=timedelta(seconds=2)
    )
    ws = await open_socket(live_url, {"authorization": f"Bearer {short.token}"})
    assert (await receive(ws))["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": EVENTS}}))
    # Nothing happens on the topic: the stream must still end, at expiry.
    message = await receive(ws)
    assert message["type"] == "next" and message["id"] == "1"
    error = message["payload"]["errors"][0]
    assert error["extensions"] == {"code": "UNAUTHENTICATED", "reason": "TOKEN_EXPIRED"}
    assert (await receive(ws)) == {"id": "1", "type": "complete"}
    assert services.hub.subscriber_count(f"security:{claims['sub']}") == 0
    # Queries over the same socket are refused too now.
    query = {"query": "{ sessions { edges { cursor } } }"}
    await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": query}))
    message = await receive(ws)
    assert message["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    await ws.close()


async def idle() -> AsyncIterator[int]:
    await asyncio.Event().wait()
    yield 1  # pragma: no cover


async def test_while_valid_ends_an_idle_stream_at_expiry():
    viewer = Viewer("u1", expires_at=datetime.now(UTC) + timedelta(milliseconds=200))
    with pytest.raises(Unauthenticated, match="expired"):
        async for _ in while_valid(viewer, idle()):
            pass


async def test_while_valid_relays_until_expiry_and_not_after():
    async def numbers() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    viewer = Viewer("u1", expires_at=datetime.now(UTC) + timedelta(minutes=5))
    assert [i async for i in while_valid(viewer, numbers())] == [0, 1, 2]
    past = Viewer("u1", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(Unauthenticated):
        async for _ in while_valid(past, numbers()):
            pass
    no_expiry = Viewer("u1", scopes=frozenset(), api_key_id="k")
    assert [i async for i in while_valid(no_expiry, numbers())] == [0, 1, 2]


class Clock:
    """`datetime` for security.viewer: the test decides when tokens expire."""

    now_value = datetime.now(UTC)

    @classmethod
    def install(cls, monkeypatch) -> type[datetime]:
        class Frozen(datetime):
            @classmethod
            def now(cls_, tz=None):
                return cls.now_value

        monkeypatch.setattr("cryptovault.security.viewer.datetime", Frozen)
        return Frozen


async def test_a_socket_whose_token_expired_runs_as_anonymous_like_http(store_server, monkeypatch):
    """Over HTTP an expired bearer token gives an anonymous caller whose private fields
    fail with TOKEN_EXPIRED (public ones answer, on the client address's budget, with
    the production introspection policy for anonymous callers). A socket whose token
    expired since connection_init behaves the same: no user budget, no introspection."""
    from tests.auth import TestAuthenticator
    from tests.conftest import serve
    from tests.harness import running

    expires_at = datetime.now(UTC) + timedelta(minutes=15)

    class Expiring(TestAuthenticator):
        async def authenticate(self, request, payload=None):
            viewer = await super().authenticate(request, payload)
            return None if viewer is None else dataclasses.replace(viewer, expires_at=expires_at)

    Clock.now_value = expires_at - timedelta(minutes=5)
    Clock.install(monkeypatch)
    budgets = {"cost_budget": 9_000, "cost_budget_anonymous": 2_000, "environment": "production"}
    async with running(store_server.url, **budgets) as (app, services), serve(app) as url:
        services.authenticator = Expiring()
        ws = await open_socket(url, {"authorization": "Bearer test:u1"})
        assert (await receive(ws))["type"] == "connection_ack"

        async def run(op_id: str, query: str) -> dict:
            await ws.send(
                json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query}})
            )
            message = await receive(ws)
            assert message["type"] == "next", message
            assert (await receive(ws))["type"] == "complete"
            return message["payload"]

        assert (await run("1", "{ rateLimit { limit } }"))["data"]["rateLimit"]["limit"] == 9_000
        introspect = "{ __schema { queryType { name } } }"
        assert (await run("2", introspect))["data"]["__schema"]["queryType"]["name"] == "Query"

        Clock.now_value = expires_at + timedelta(seconds=1)
        assert (await run("3", "{ rateLimit { limit } }"))["data"]["rateLimit"]["limit"] == 2_000
        await ws.send(
            json.dumps({"id": "4", "type": "subscribe", "payload": {"query": introspect}})
        )
        refused = await receive(ws)  # refused before it runs: an `error` message
        assert refused["type"] == "error"
        assert refused["payload"][0]["extensions"]["code"] == "FORBIDDEN"
        private = await run("5", "{ viewer { id } }")
        assert private["errors"][0]["extensions"] == {
            "code": "UNAUTHENTICATED",
            "reason": "TOKEN_EXPIRED",
        }
        assert (await run("6", "{ assets { symbol } }"))["data"]["assets"]
        await ws.close()
