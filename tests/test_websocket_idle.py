"""What an idle, acknowledged graphql-transport-ws socket keeps alive: not the
connection_init timeout's task, once connection_init has arrived; one frame of the
view, no message it handled, not its subscription's preparation or a task for it."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import inspect
import logging
import weakref
from datetime import timedelta
from typing import Any

import orjson
import websockets
from strawberry.asgi import GraphQL
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)

from cryptovault.app import GraphQLApp
from cryptovault.resolvers.context import Context
from cryptovault.subscriptions.groups import Prepared
from cryptovault.websocket import AppTransportWSHandler, LimitedWebSocketAdapter

WAIT = 10  # seconds: a bound for what must happen, never an assertion on timing


async def until(condition, what: str = "") -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.005)


class Frames:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)


class InMemoryWebSocket:
    """Strawberry's WebSocket adapter surface, without a network."""

    def __init__(self) -> None:
        self.ws = Frames()
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.closed: tuple[int, str] | None = None

    async def iter_json(self, *, ignore_parsing_errors: bool = False):
        while (message := await self.inbox.get()) is not None:
            yield message

    async def send_json(self, message: Any) -> None:
        raise AssertionError("grouped mode sends through the outbox")

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.inbox.put_nowait(None)


async def test_an_acknowledged_socket_does_not_keep_its_init_timeout_task(app, settings, services):
    view = GraphQLApp(app, settings)
    ws = InMemoryWebSocket()
    handler = AppTransportWSHandler(
        view,
        ws,
        Context(services=services, request=None),
        None,
        view.schema,  # type: ignore[arg-type]
        timedelta(seconds=60),
    )
    handling = asyncio.create_task(handler.handle())
    await until(lambda: handler.connection_init_timeout_task is not None)
    timeout_task = weakref.ref(handler.connection_init_timeout_task)
    ws.inbox.put_nowait({"type": "connection_init"})
    await until(lambda: handler.connection_acknowledged)
    assert ws.ws.sent == ['{"type":"connection_ack"}']
    await until(lambda: timeout_task() is None or timeout_task().done())
    gc.collect()
    # The socket is still open and idle; the cancelled timeout is gone with it.
    assert timeout_task() is None
    assert not handling.done()
    # The protocol goes on as before: ping is answered, then the client closes.
    ws.inbox.put_nowait({"type": "ping"})
    await until(lambda: len(ws.ws.sent) == 2)
    assert ws.ws.sent[1] == '{"type":"pong"}'
    ws.inbox.put_nowait(None)
    await asyncio.wait_for(handling, WAIT)
    assert ws.closed is None


# -- what stays referenced while a subscribed socket idles -------------------------------

SUBSCRIBE_ID = "idle-subscriber-1"
SUBSCRIBE = {
    "id": SUBSCRIBE_ID,
    "type": "subscribe",
    "payload": {"query": 'subscription { prices(symbols: ["BTC"]) { symbol price } }'},
}


class ASGISocket:
    """An ASGI WebSocket connection as uvicorn hands one to the app."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.scope = {
            "type": "websocket",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "subprotocols": ["graphql-transport-ws"],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "scheme": "ws",
            "root_path": "",
            "state": {},
        }
        self.inbox.put_nowait({"type": "websocket.connect"})

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def client_sends(self, message: Any) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": orjson.dumps(message).decode()})

    def texts(self) -> list[Any]:
        return [orjson.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]


def _is_subscribe(message: dict[Any, Any]) -> bool:
    operation_id = message.get("id")
    return type(operation_id) is str and operation_id == SUBSCRIBE_ID


def awaiting(coroutine: Any) -> list[str]:
    """The coroutines a suspended coroutine waits through, outermost first."""
    chain = []
    while inspect.iscoroutine(coroutine):
        chain.append(coroutine.cr_code.co_qualname)
        coroutine = coroutine.cr_await
    return chain


async def test_an_idle_subscribed_socket_keeps_one_frame_of_the_view_and_no_message(
    app, settings, services
):
    view = GraphQLApp(app, settings)
    socket = ASGISocket()
    serving = view(socket.scope, socket.receive, socket.send)
    handling = asyncio.ensure_future(serving)
    socket.client_sends({"type": "connection_init", "payload": {}})
    await until(lambda: {"type": "connection_ack"} in socket.texts())
    socket.client_sends(SUBSCRIBE)
    assert view.subscription_groups is not None
    await until(lambda: view.subscription_groups.stats()["subscribers"] == 1)
    await until(lambda: socket.inbox.empty())
    await asyncio.sleep(0.05)  # the handler is back waiting for the next message
    gc.collect()

    # Between uvicorn and the protocol's handler: one frame of the view (Strawberry's
    # ASGI view would keep four: the HTTP view's __call__ and run, its own), and the
    # handler's loop is Strawberry's, in its own frame.
    assert awaiting(serving)[:2] == [
        "WebSocketTransport._serve_websocket",
        "TransportWSHandler.handle",
    ]
    # Neither the subscribe message (decoded, or its text) nor the subscriber's own
    # preparation outlives its handling: the group holds what it needs.
    readers = []
    for thing in gc.get_objects():
        if thing is not SUBSCRIBE and type(thing) is dict and _is_subscribe(thing):
            raise AssertionError(f"the subscribe message is still referenced: {thing}")
        assert type(thing) is not Prepared, "the subscriber's preparation is still referenced"
        if (
            inspect.isasyncgen(thing)
            and thing.ag_code is LimitedWebSocketAdapter.iter_json.__code__
        ):
            readers.append(thing)
    assert len(readers) == 1
    # Nor a task of its own: its operation task ended once it joined its group.
    operations = [t for t in asyncio.all_tasks() if "run_operation" in repr(t.get_coro())]
    assert operations == []
    assert readers[0].ag_frame is not None
    assert {"text", "message"}.isdisjoint(readers[0].ag_frame.f_locals)
    assert not handling.done()

    # The protocol goes on: ping is answered, complete ends the subscription, the
    # client closes.
    socket.client_sends({"type": "ping"})
    await until(lambda: {"type": "pong"} in socket.texts())
    socket.client_sends({"type": "complete", "id": SUBSCRIBE_ID})
    await until(lambda: view.subscription_groups.stats()["subscribers"] == 0)
    socket.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(handling, WAIT)


def _source_sha256(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def test_the_strawberry_code_the_socket_path_follows_is_the_one_it_was_checked_against():
    """`WebSocketTransport._serve_websocket` does what Strawberry's ASGI `__call__` and
    `run` do with a WebSocket, and `TransportWSHandler.handle` what Strawberry's
    `handle` does: another Strawberry fails here until both are compared again."""
    assert _source_sha256(GraphQL.__call__) == (
        "061f027d2fb949bb5612e43f3c18c5d3ccaac4968b667b18f737941df601391f"
    )
    assert _source_sha256(AsyncBaseHTTPView.run) == (
        "b278e647b7eee2e85196f5499025e0210bef4d161a6aa1ed7a26edb196a15209"
    )
    assert _source_sha256(BaseGraphQLTransportWSHandler.handle) == (
        "38622a72d445f675b7b55290cb8d5f75e54d61b78d1d91c7a3ea09d471080296"
    )


async def test_the_clients_close_code_is_in_the_connections_log_line(live_url, caplog):
    with caplog.at_level(logging.INFO, logger="cryptovault.lifecycle"):
        async with websockets.connect(
            f"ws://{live_url}/graphql", subprotocols=["graphql-transport-ws"]
        ) as ws:
            await ws.send(orjson.dumps({"type": "connection_init", "payload": {}}).decode())
            assert orjson.loads(await ws.recv())["type"] == "connection_ack"
            await ws.close(4321, "bye")
        await until(lambda: any(r.message == "websocket closed" for r in caplog.records))
    line = next(r for r in caplog.records if r.message == "websocket closed")
    assert line.close_code == 4321  # type: ignore[attr-defined]
    assert line.closed_by == "client"  # type: ignore[attr-defined]
