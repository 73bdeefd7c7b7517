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

import hypothesis
import pytest
import uvicorn
import websockets
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets import websockets_sansio_impl
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.protocol import State
from websockets.server import ServerProtocol

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


# -- a text frame written at once --------------------------------------------------------


class Recorder:
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))


def _open_conn() -> ServerProtocol:
    conn = ServerProtocol()
    conn.state = State.OPEN
    return conn


def accepted_connection() -> LeanWebSocketsProtocol:
    """A protocol in the state uvicorn's leaves an accepted connection in (the
    attributes its `send` reads; the uvicorn source is pinned above), over a transport
    that records."""
    protocol = object.__new__(LeanWebSocketsProtocol)
    protocol.conn = _open_conn()
    protocol.transport = Recorder()  # type: ignore[assignment]
    protocol.writable = Writable()  # type: ignore[assignment]
    protocol.writable.set()
    protocol.close_sent = False
    protocol.disconnected = False
    protocol.handshake_complete = True
    protocol.initial_response = None
    return protocol


def sent_by_websockets(text: str) -> bytes:
    """The bytes uvicorn's `send` writes for a text message: websockets' frame."""
    conn = _open_conn()
    conn.send_text(text.encode())
    return b"".join(conn.data_to_send())


# Every length encoding (7, 16 and 64 bits) and both sides of each boundary, in bytes.
TEXTS = ["", "a", "x" * 125, "x" * 126, "é" * 63, "x" * 127, "x" * 65535, "x" * 65536]


@pytest.mark.parametrize("text", TEXTS, ids=lambda t: f"{len(t.encode())}B")
def test_a_text_frame_written_at_once_is_the_frame_send_writes(text):
    protocol = accepted_connection()
    assert protocol.write_text(text) is True
    assert protocol.transport.written == [sent_by_websockets(text)]


@hypothesis.given(st.text(max_size=300))
def test_any_text_is_framed_as_websockets_frames_it(text):
    protocol = accepted_connection()
    assert protocol.write_text(text)
    assert protocol.transport.written == [sent_by_websockets(text)]


def _pending_pong(protocol: LeanWebSocketsProtocol) -> None:
    protocol.conn.send_pong(b"")  # bytes of the connection's own, not yet written


DECLINED = {
    "transport paused": lambda p: p.writable.clear(),
    "close sent": lambda p: setattr(p, "close_sent", True),
    "peer gone": lambda p: setattr(p, "disconnected", True),
    "not accepted": lambda p: setattr(p, "handshake_complete", False),
    "rejected with a response": lambda p: setattr(p, "initial_response", (403, [], b"")),
    "closing": lambda p: setattr(p.conn, "state", State.CLOSING),
    "fragment under way": lambda p: setattr(p.conn, "expect_continuation_frame", True),
    "permessage-deflate": lambda p: p.conn.extensions.append(
        PerMessageDeflate(False, False, 15, 15)
    ),
    "bytes waiting": _pending_pong,
    "frame logging": lambda p: setattr(p.conn, "debug", True),
}


@pytest.mark.parametrize("condition", list(DECLINED))
def test_it_declines_where_send_would_wait_refuse_or_do_more(condition):
    protocol = accepted_connection()
    DECLINED[condition](protocol)
    assert protocol.write_text("hello") is False
    assert protocol.transport.written == []


class FrameApp:
    """A bare ASGI WebSocket app (uvicorn's own `send`, no layer between) that answers
    "<how> <bytes>" with a text of that many bytes, written at once or through `send`."""

    def __init__(self) -> None:
        self.at_once = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        protocol = send.__self__
        while (message := await receive())["type"] == "websocket.receive":
            how, size = message["text"].split()
            text = "x" * int(size)
            if how == "now" and protocol.write_text(text):
                self.at_once += 1
            else:
                await send({"type": "websocket.send", "text": text})


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "permessage-deflate"])
async def test_frames_written_at_once_reach_a_client_between_frames_sent(deflate):
    """With permessage-deflate negotiated, nothing is written at once: every frame is
    compressed by `send`."""
    app = FrameApp()
    sizes = [0, 125, 126, 65535, 65536, 200_000]
    async with (
        serving(app, ws_per_message_deflate=deflate) as (address, _server),
        websockets.connect(f"ws://{address}/", max_size=2**20) as ws,
    ):
        for size in sizes:
            for how in ("now", "send"):
                await ws.send(f"{how} {size}")
                assert await asyncio.wait_for(ws.recv(), WAIT) == "x" * size
        # A later `send`'s frame does not overtake one written at once.
        for size in sizes:
            await ws.send(f"now {size}")
            await ws.send(f"send {size}")
        for size in sizes:
            for _ in range(2):
                assert await asyncio.wait_for(ws.recv(), WAIT) == "x" * size
    assert app.at_once == (0 if deflate else 2 * len(sizes))
