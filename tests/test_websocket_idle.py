"""What an idle, acknowledged graphql-transport-ws socket keeps alive: not the
connection_init timeout's task, once connection_init has arrived."""

from __future__ import annotations

import asyncio
import gc
import weakref
from datetime import timedelta
from typing import Any

from cryptovault.app import GraphQLApp
from cryptovault.resolvers.context import Context
from cryptovault.websocket import AppTransportWSHandler

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
