"""How subscribers are grouped (per viewer unless a field is shared), that permission
checks still run per subscriber, slow readers (coalescing, closing with 1013), and
that memory stays flat while events flow."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import strawberry
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from strawberry.asgi import GraphQL
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cryptovault.app import GraphQLApp
from cryptovault.errors import Unauthenticated
from cryptovault.extensions.masking import ErrorMapping
from cryptovault.resolvers.context import Context, Info
from cryptovault.schema.permissions import IsAuthenticated
from cryptovault.security.viewer import Viewer
from cryptovault.subscriptions import CLOSE_TOO_SLOW, shared_stream
from cryptovault.subscriptions.groups import SubscriptionGroups
from cryptovault.websocket import GroupedLegacyWSHandler, GroupedTransportWSHandler
from tests.conftest import serve, tick

WAIT = 10  # seconds: a bound for what must happen, never an assertion on timing


async def until(condition, what: str = "") -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.005)


# -- a schema with private and shared streams ----------------------------------------


@strawberry.type
class Note:
    user: str
    text: str

    @strawberry.field
    def seen_by(self, info: Info) -> str | None:
        viewer = info.context.viewer
        return viewer.user_id if viewer else None


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription(permission_classes=[IsAuthenticated])
    async def notes(self, info: Info) -> AsyncGenerator[Note]:
        """Private (no declaration): the viewer's own notes."""
        viewer = info.context.viewer
        with info.context.services.hub.subscribe(f"notes:{viewer.user_id}") as sub:
            async for text in sub:
                yield Note(user=viewer.user_id, text=text)

    @strawberry.subscription(permission_classes=[IsAuthenticated])
    async def inbox(self, info: Info) -> AsyncGenerator[Note]:
        """Private; ends with UNAUTHENTICATED on "expire", as a stream wrapped in
        `while_valid` does when the viewer's token expires."""
        viewer = info.context.viewer
        with info.context.services.hub.subscribe(f"inbox:{viewer.user_id}") as sub:
            async for text in sub:
                if text == "expire":
                    raise Unauthenticated("The access token has expired", reason="TOKEN_EXPIRED")
                yield Note(user=viewer.user_id, text=text)

    @strawberry.subscription
    async def scratch(self, info: Info) -> AsyncGenerator[Note]:
        """Private and open to anonymous callers: grouped per connection then."""
        with info.context.services.hub.subscribe("scratch") as sub:
            async for text in sub:
                yield Note(user="-", text=text)

    @strawberry.subscription(permission_classes=[IsAuthenticated], metadata=shared_stream())
    async def news(self, info: Info) -> AsyncGenerator[Note]:
        """Shared, members only."""
        with info.context.services.hub.subscribe("news") as sub:
            async for text in sub:
                yield Note(user="newsroom", text=text)


class View(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = GroupedTransportWSHandler
    graphql_ws_handler_class = GroupedLegacyWSHandler

    def __init__(self, services, send_queue: int = 1000) -> None:
        schema = strawberry.Schema(
            query=Query, subscription=Subscription, extensions=[ErrorMapping]
        )
        super().__init__(schema)
        self.services = services
        self.subscription_groups = SubscriptionGroups(self.schema, send_queue)

    async def get_context(self, request, response=None) -> Context:  # type: ignore[override]
        return Context(services=self.services, request=request, response=response)

    async def on_ws_connect(self, context: Context):  # type: ignore[override]
        params = context.connection_params or {}
        if "user" in params:
            context.viewer = Viewer(params["user"], session_id=params.get("session"))

    def encode_json(self, data: object) -> str:
        return json.dumps(data)


@contextlib.asynccontextmanager
async def serve_view(services, **kw: Any) -> AsyncIterator[tuple[str, SubscriptionGroups]]:
    view = View(services, **kw)
    async with serve(Starlette(routes=[WebSocketRoute("/graphql", view)])) as url:
        yield url, view.subscription_groups


@contextlib.asynccontextmanager
async def subscriber(
    url: str, query: str, user: str | None = None, session: str | None = None, **kw: Any
):
    params = {"user": user, "session": session} if user else {}
    async with connect(f"ws://{url}/graphql", subprotocols=["graphql-transport-ws"], **kw) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": params}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        yield ws


async def receive(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


NOTES = "subscription { notes { user text seenBy } }"
NEWS = "subscription { news { text seenBy } }"
SCRATCH = "subscription { scratch { text } }"


async def test_private_streams_are_grouped_per_viewer_credential(services):
    hub = services.hub
    async with (
        serve_view(services) as (url, groups),
        subscriber(url, NOTES, "alice", "s1") as alice1,
        subscriber(url, NOTES, "alice", "s1") as alice2,
        subscriber(url, NOTES, "alice", "s2") as alice_elsewhere,
        subscriber(url, NOTES, "bob", "s3") as bob,
    ):
        await until(lambda: groups.stats() == {"groups": 3, "subscribers": 4})
        assert hub.subscriber_count("notes:alice") == 2  # one per session, not per socket
        hub.publish("notes:bob", "for bob")
        hub.publish("notes:alice", "for alice")
        for ws in (alice1, alice2, alice_elsewhere):
            note = (await receive(ws))["payload"]["data"]["notes"]
            # The selection set runs as the viewer of the group.
            assert note == {"user": "alice", "text": "for alice", "seenBy": "alice"}
        assert (await receive(bob))["payload"]["data"]["notes"]["text"] == "for bob"


async def test_anonymous_private_streams_are_not_shared_between_connections(services):
    async with (
        serve_view(services) as (url, groups),
        subscriber(url, SCRATCH) as one,
        subscriber(url, SCRATCH) as two,
    ):
        await until(lambda: groups.stats() == {"groups": 2, "subscribers": 2})
        services.hub.publish("scratch", "hello")
        for ws in (one, two):
            assert (await receive(ws))["payload"]["data"]["scratch"]["text"] == "hello"


async def test_permissions_are_checked_for_every_subscriber_of_a_shared_stream(services):
    async with (
        serve_view(services) as (url, groups),
        subscriber(url, NEWS, "alice") as alice,
        subscriber(url, NEWS, "bob") as bob,
    ):
        await until(lambda: groups.stats() == {"groups": 1, "subscribers": 2})
        # The group exists; an anonymous subscriber is still refused.
        async with subscriber(url, NEWS) as anonymous:
            refused = await receive(anonymous)
        assert refused["type"] == "error"
        assert refused["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert groups.stats() == {"groups": 1, "subscribers": 2}
        services.hub.publish("news", "extra")
        for ws in (alice, bob):
            # Shared: the selection set runs without a viewer, the same for everyone.
            note = (await receive(ws))["payload"]["data"]["news"]
            assert note == {"text": "extra", "seenBy": None}


async def test_a_private_stream_that_fails_ends_its_group_only(services):
    inbox = "subscription { inbox { text } }"
    async with (
        serve_view(services) as (url, groups),
        subscriber(url, inbox, "dana", "s1") as dana1,
        subscriber(url, inbox, "dana", "s1") as dana2,
        subscriber(url, inbox, "erin", "s2") as erin,
    ):
        await until(lambda: groups.stats() == {"groups": 2, "subscribers": 3})
        services.hub.publish("inbox:dana", "expire")
        for ws in (dana1, dana2):
            ended = await receive(ws)
            assert ended["type"] == "next" and ended["payload"]["data"] is None
            assert ended["payload"]["errors"][0]["extensions"] == {
                "code": "UNAUTHENTICATED",
                "reason": "TOKEN_EXPIRED",
            }
            assert await receive(ws) == {"id": "1", "type": "complete"}
        await until(lambda: groups.stats() == {"groups": 1, "subscribers": 1})
        assert services.hub.subscriber_count("inbox:dana") == 0
        services.hub.publish("inbox:erin", "still here")
        assert (await receive(erin))["payload"]["data"]["inbox"]["text"] == "still here"


# -- slow readers -------------------------------------------------------------------


class CountingSocket:
    """Stands in for Starlette's WebSocket: counts the frames written to it."""

    def __init__(self, counter: list[int]) -> None:
        self.counter = counter

    async def send_text(self, text: str) -> None:
        self.counter[0] += 1


class StalledSocket:
    """A socket whose client stopped reading until `gate` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.frames: list[str] = []

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        self.frames.append(text)


class InMemoryWebSocket:
    """Strawberry's WebSocket adapter surface, without a network."""

    def __init__(self, view: Any, counter: list[int]) -> None:
        self.view = view
        self.ws = CountingSocket(counter)
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def iter_json(self, *, ignore_parsing_errors: bool = False):
        while (message := await self.inbox.get()) is not None:
            yield message

    async def send_json(self, message: Any) -> None:
        self.ws.counter[0] += 1

    async def close(self, code: int, reason: str) -> None:
        self.inbox.put_nowait(None)


def stalled_socket(url: str) -> socket.socket:
    """A connected TCP socket with a tiny receive window: once the client stops
    reading, the server's writes back up quickly."""
    host, port = url.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return sock


async def test_a_slow_reader_gets_the_newest_price_per_symbol_not_a_backlog(
    app, settings, services
):
    view = GraphQLApp(app, settings)
    groups = view.subscription_groups
    ws = InMemoryWebSocket(view, [0])
    ws.ws = StalledSocket()
    handler = GroupedTransportWSHandler(
        view,
        ws,
        Context(services=services, request=None),
        None,
        view.schema,  # type: ignore[arg-type]
        timedelta(seconds=60),
    )
    task = asyncio.create_task(handler.handle())
    query = 'subscription { prices(symbols: ["AVAX", "LTC"]) { symbol price } }'
    ws.inbox.put_nowait({"type": "connection_init"})
    ws.inbox.put_nowait({"id": "p", "type": "subscribe", "payload": {"query": query}})
    try:
        await until(lambda: groups.stats()["subscribers"] == 1)
        start = datetime.now(UTC) + timedelta(hours=2)
        # The socket is stuck (the client does not read): 100 ticks per symbol.
        for i in range(100):
            for symbol, base in (("AVAX", 20), ("LTC", 80)):
                price = f"{base + i / 100:.2f}"
                services.market.apply(tick(symbol, price, at=start + timedelta(milliseconds=i)))
                await asyncio.sleep(0)
        await until(lambda: handler.outbox.coalesced >= 190)
        ws.ws.gate.set()  # the client reads again
        await until(lambda: len(ws.ws.frames) == 3)
    finally:
        ws.inbox.put_nowait(None)
        await task
    ack, *prices = [json.loads(f) for f in ws.ws.frames]
    assert ack == {"type": "connection_ack"}
    # Only the newest price of each symbol waited for the socket.
    assert [p["payload"]["data"]["prices"] for p in prices] == [
        {"symbol": "AVAX", "price": "20.99"},
        {"symbol": "LTC", "price": "80.99"},
    ]


async def test_a_reader_too_far_behind_is_closed_with_1013(services):
    async with serve_view(services, send_queue=8) as (url, groups):
        sock = stalled_socket(url)
        async with subscriber(url, NOTES, "carol", sock=sock, max_queue=1) as ws:
            await until(lambda: groups.stats()["subscribers"] == 1)
            sent = 0
            while groups.stats()["subscribers"] == 1 and sent < 2000:
                # Random text: the connection may compress (permessage-deflate).
                services.hub.publish("notes:carol", base64.b64encode(os.urandom(49152)).decode())
                sent += 1
                await asyncio.sleep(0)
            assert sent < 2000, "the slow reader was never closed"
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TOO_SLOW
        await until(lambda: groups.stats() == {"groups": 0, "subscribers": 0})


# -- memory -------------------------------------------------------------------------


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
async def test_memory_stays_flat_over_5000_events_to_200_subscribers(app, settings, services):
    subscribers, events, warmup = 200, 5000, 300
    view = GraphQLApp(app, settings)
    groups = view.subscription_groups
    delivered = [0]
    sockets = [InMemoryWebSocket(view, delivered) for _ in range(subscribers)]
    handlers = [
        GroupedTransportWSHandler(
            view,
            ws,
            Context(services=services, request=None),
            None,
            view.schema,  # type: ignore[arg-type]
            timedelta(seconds=60),
        )
        for ws in sockets
    ]
    tasks = [asyncio.create_task(h.handle()) for h in handlers]
    query = 'subscription { prices(symbols: ["DOT"]) { symbol price bid ask timestamp } }'
    for ws in sockets:
        ws.inbox.put_nowait({"type": "connection_init"})
        ws.inbox.put_nowait({"id": "1", "type": "subscribe", "payload": {"query": query}})
    try:
        await until(lambda: groups.stats() == {"groups": 1, "subscribers": subscribers})
        start = datetime.now(UTC) + timedelta(hours=3)

        async def run(first: int, count: int) -> None:
            for i in range(first, first + count):
                expected = delivered[0] + subscribers
                price = f"{5 + (i % 1000) / 1000:.3f}"
                services.market.apply(tick("DOT", price, at=start + timedelta(milliseconds=i)))
                while delivered[0] < expected:
                    await asyncio.sleep(0)

        await run(0, warmup)
        gc.collect()
        before, counted = rss(), delivered[0]
        await run(warmup, events)
        gc.collect()
        growth = rss() - before
    finally:
        for ws in sockets:
            ws.inbox.put_nowait(None)
        await asyncio.gather(*tasks)
    assert delivered[0] - counted == events * subscribers
    per_event_per_subscriber = growth / (events * subscribers)
    assert per_event_per_subscriber < 100, f"RSS grew {growth} bytes over {events} events"
    await until(lambda: groups.stats() == {"groups": 0, "subscribers": 0})
