"""uvicorn's WebSocket protocol with less state per connection (cryptovault/wsprotocol.py):
the same behaviour on the wire, and what a connection no longer keeps."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import hashlib
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets import websockets_sansio_impl

from cryptovault.cli import connection_options
from cryptovault.wsprotocol import Inbox, LeanWebSocketsProtocol, Writable
from tests.conftest import serving

WAIT = 10  # seconds: a bound for what must happen, never an assertion on timing


# -- the queue and the flag --------------------------------------------------------------


async def test_the_inbox_hands_out_messages_in_order_and_waits_when_empty():
    inbox = Inbox()
    assert inbox.empty()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert not inbox.empty() and inbox.qsize() == 2
    assert await inbox.get() == 1
    assert await inbox.get() == 2
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.put_nowait(3)
    assert await asyncio.wait_for(waiting, WAIT) == 3
    assert inbox.empty()


async def test_the_inbox_serves_several_getters_one_message_each():
    inbox = Inbox()
    getters = [asyncio.ensure_future(inbox.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for item in "abc":
        inbox.put_nowait(item)
    assert sorted(await asyncio.wait_for(asyncio.gather(*getters), WAIT)) == ["a", "b", "c"]


async def test_a_cancelled_getter_loses_no_message():
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("only")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs: `second` gets it
    assert await asyncio.wait_for(second, WAIT) == "only"
    assert first.cancelled()
    # A getter cancelled while waiting is forgotten: the next message is not lost.
    third = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    third.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await third
    inbox.put_nowait("next")
    assert await asyncio.wait_for(inbox.get(), WAIT) == "next"


async def test_the_writable_flag_lets_writers_through_only_while_set():
    flag = Writable()
    assert not flag.is_set()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), WAIT) == [True, True]
    assert flag.is_set() and await flag.wait() is True
    flag.clear()
    blocked = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert not blocked.done()
    blocked.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await blocked
    flag.set()
    assert await flag.wait() is True


# -- on the wire -------------------------------------------------------------------------

MAX_SIZE = 4096


async def echo(ws: WebSocket) -> None:
    await ws.accept(subprotocol="graphql-transport-ws")
    try:
        while True:
            text = await ws.receive_text()
            if text == "close please":
                await ws.close(4409, "as asked")
                return
            await ws.send_text(text.upper())
    except WebSocketDisconnect:
        pass


@contextlib.asynccontextmanager
async def lean_server(**options: Any) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    app = Starlette(routes=[WebSocketRoute("/ws", echo)])
    async with serving(app, ws_max_size=MAX_SIZE, **options) as (address, server):
        yield f"ws://{address}/ws", server


# What every connection of a server refers to: not the connection's own state.
SHARED = {"loop", "config", "app", "logger", "connections", "tasks", "default_headers", "app_state"}


def _protocols(server: uvicorn.Server) -> list[LeanWebSocketsProtocol]:
    return [c for c in server.server_state.connections if isinstance(c, LeanWebSocketsProtocol)]


async def test_a_lean_connection_speaks_the_same_protocol_and_keeps_no_handshake_or_deque():
    async with (
        lean_server(ws_ping_interval=0.2, ws_ping_timeout=5) as (url, server),
        websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws,
    ):
        assert ws.subprotocol == "graphql-transport-ws"
        await ws.send("hello")
        assert await ws.recv() == "HELLO"
        # The client's ping is answered; the server's keep-alive pings are
        # answered by the client library, and the connection stays up.
        pong = await ws.ping()
        await asyncio.wait_for(pong, WAIT)
        await asyncio.sleep(0.5)
        await ws.send("still there")
        assert await ws.recv() == "STILL THERE"

        (protocol,) = _protocols(server)
        assert protocol.request is None and protocol.response is None
        assert isinstance(protocol.queue, Inbox) and isinstance(protocol.writable, Writable)
        state = [v for k, v in vars(protocol).items() if k not in SHARED]
        kept = [*state, *gc.get_referents(*state)]
        assert not any(isinstance(thing, collections.deque) for thing in kept)

        # Over the size limit: closed with 1009, as uvicorn's own protocol does.
        await ws.send("x" * (MAX_SIZE + 1))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_close_codes_go_both_ways():
    async with (
        lean_server() as (url, _server),
        websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws,
    ):
        await ws.send("close please")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4409, "as asked")


async def test_a_peer_that_never_answers_pings_is_closed_by_the_keep_alive():
    # ping_interval=None: the client library sends no pings; it still answers the
    # server's, unless it is not reading. A paused reader cannot answer.
    async with (
        lean_server(ws_ping_interval=0.1, ws_ping_timeout=0.2) as (url, _server),
        websockets.connect(url, subprotocols=["graphql-transport-ws"], ping_interval=None) as ws,
    ):
        ws.transport.pause_reading()
        await asyncio.sleep(0.6)
        ws.transport.resume_reading()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


def test_cryptovault_serve_runs_the_lean_protocol(settings):
    assert connection_options(settings)["ws"] is LeanWebSocketsProtocol


def test_the_uvicorn_protocol_it_extends_is_the_one_it_was_checked_against():
    """LeanWebSocketsProtocol relies on uvicorn's attributes `queue`, `writable`,
    `request`, `response` and on `start_keepalive` being called once the handshake
    response is written: another uvicorn fails here until that is checked again."""
    source = inspect.getsource(websockets_sansio_impl)
    assert hashlib.sha256(source.encode()).hexdigest() == (
        "eea1812ddf16e62ea10c612b7a9a5cf7fbbc0360562690ae180a40a549dca7b1"
    )
