"""Adversarial checks of the fan-out's frames written at once
(LeanWebSocketsProtocol.write_text via TrackedWebSocket.write_text), on a real uvicorn
server with WebSocketTracking in front of the grouped view, so that the fast path is
the one taken: slow readers, shutdown mid fan-out, keep-alive pings, permessage-deflate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import struct
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from websockets.exceptions import ConnectionClosed

from cryptovault.lifecycle import WebSocketTracking
from cryptovault.subscriptions import CLOSE_TOO_SLOW
from cryptovault.subscriptions.groups import SubscriptionGroups
from cryptovault.subscriptions.outbox import Outbox
from cryptovault.websocket import _text_sender
from tests.conftest import serving
from tests.test_subscription_groups import (
    NOTES,
    WAIT,
    View,
    stalled_socket,
    subscriber,
    until,
)


@contextlib.asynccontextmanager
async def tracked_view(
    services, send_queue: int = 1000, **options: Any
) -> AsyncIterator[tuple[str, SubscriptionGroups, Any]]:
    """The grouped view behind WebSocketTracking (as in the app), on uvicorn."""
    view = View(services, send_queue=send_queue)
    app = Starlette(
        routes=[WebSocketRoute("/graphql", view)], middleware=[Middleware(WebSocketTracking)]
    )
    app.state.services = services
    async with serving(app, **options) as (url, server):
        yield url, view.subscription_groups, server


async def test_a_slow_reader_is_still_closed_with_1013_when_frames_go_out_at_once(
    services, at_once
):
    async with tracked_view(services, send_queue=8) as (url, groups, _):
        sock = stalled_socket(url)
        async with subscriber(url, NOTES, "carol", sock=sock, max_queue=1) as ws:
            await until(lambda: groups.stats()["subscribers"] == 1)
            sent = 0
            while groups.stats()["subscribers"] == 1 and sent < 2000:
                services.hub.publish("notes:carol", base64.b64encode(os.urandom(49152)).decode())
                sent += 1
                await asyncio.sleep(0)
            assert sent < 2000, "the slow reader was never closed"
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TOO_SLOW
        assert at_once, "the fast path was never taken"
        await until(lambda: groups.stats() == {"groups": 0, "subscribers": 0})


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "permessage-deflate"])
async def test_frames_arrive_in_order_between_keepalive_pings(services, at_once, deflate):
    """Server pings every 10 ms while frames are written at once (or through send,
    compressed): every frame arrives, in order, and the connection stays up."""
    options = {"ws_ping_interval": 0.01, "ws_ping_timeout": 5, "ws_per_message_deflate": deflate}
    async with (
        tracked_view(services, **options) as (url, groups, _),
        subscriber(url, NOTES, "dave") as ws,
    ):
        await until(lambda: groups.stats()["subscribers"] == 1)
        n = 400
        for i in range(n):
            services.hub.publish("notes:dave", f"{i}:" + "é" * (i * 37 % 300))
            if i % 20 == 0:
                await asyncio.sleep(0.012)  # let a ping go out between frames
        got = []
        while len(got) < n:
            frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            got.append(int(frame["payload"]["data"]["notes"]["text"].split(":")[0]))
        assert got == list(range(n))
    if deflate:
        assert not [f for f in at_once if '"notes"' in f]
    else:
        assert len([f for f in at_once if '"notes"' in f]) == n


# -- a raw client: every frame on the wire, after the close too ------------------------


def _client_frame(opcode: int, payload: bytes) -> bytes:
    # Masked (a client must mask) with the zero key: the payload is unchanged.
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def _server_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    i = 0
    while i + 2 <= len(data):
        b0, b1 = data[i], data[i + 1]
        assert not b1 & 0x80, "a server frame is masked"
        n = b1 & 0x7F
        j = i + 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, j)
            j += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, j)
            j += 8
        if j + n > len(data):
            break
        frames.append((b0 & 0x0F, data[j : j + n]))
        i = j + n
    return frames


async def test_no_frame_follows_the_close_when_the_server_shuts_down_mid_fanout(services, at_once):
    async with tracked_view(services) as (url, groups, _):
        reader, writer = await _raw_subscriber(url, "erin")
        await until(lambda: groups.stats()["subscribers"] == 1)

        publishing = True

        async def publish() -> None:
            i = 0
            while publishing:
                services.hub.publish("notes:erin", f"n{i}")
                i += 1
                await asyncio.sleep(0)

        publisher = asyncio.create_task(publish())
        await until(lambda: len(at_once) > 50)
        closing = asyncio.create_task(services.websockets.close_all(1001, "bye", timeout=WAIT))
        # close_all refuses new connections from now on: the registry is shared.
        closing.add_done_callback(lambda _: setattr(services.websockets, "accepting", True))
        data = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(65536), WAIT):
                data += chunk
                if any(op == 8 for op, _ in _server_frames(data)):
                    # The close is there: echo it, then read what still comes.
                    writer.write(_client_frame(8, struct.pack("!H", 1001)))
                    await asyncio.sleep(0.2)
                    with contextlib.suppress(TimeoutError):
                        while more := await asyncio.wait_for(reader.read(65536), 1):
                            data += more
                    break
        publishing = False
        await publisher
        await closing
        writer.close()
    frames = _server_frames(data)
    opcodes = [op for op, _ in frames]
    assert 8 in opcodes
    close_at = opcodes.index(8)
    assert struct.unpack("!H", frames[close_at][1][:2])[0] == 1001
    assert opcodes[close_at + 1 :] == [], "frames written after the close frame"


# -- memory per socket ---------------------------------------------------------------


def _retained_per_socket(make: Any, n: int = 500) -> float:
    """Bytes still allocated per socket after `make(ws)` for `n` tracked sockets."""
    from starlette.websockets import WebSocket

    from cryptovault.lifecycle import TRACKED_SOCKET, TrackedWebSocket

    async def send(message: Any) -> None:
        pass

    async def receive() -> Any:
        return {}

    sockets = []
    for _ in range(n):
        scope = {"type": "websocket", "path": "/", "headers": []}
        scope[TRACKED_SOCKET] = TrackedWebSocket(send)
        sockets.append(WebSocket(scope, receive, send))
    # What cryptovault/websocket.py allocates (the sender, what it keeps): the
    # test's own lists and the interpreter's caches stay out of the count.
    only = [tracemalloc.Filter(True, _text_sender.__code__.co_filename)]
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(only)
        kept = [make(ws) for ws in sockets]
        after = tracemalloc.take_snapshot().filter_traces(only)
    finally:
        tracemalloc.stop()
        gc.enable()
    assert len(kept) == n
    return sum(d.size_diff for d in after.compare_to(before, "filename")) / n


async def test_writing_at_once_costs_a_socket_no_more_than_a_bound_method():
    """Every graphql-transport-ws socket has an outbox: what `write_now` keeps per
    socket adds to the idle socket's memory (bench/RESULTS.md, "idle subscribed
    socket"), which the project trims by hundreds of bytes at a time."""

    async def close(code: int, reason: str) -> None:
        pass

    def with_write_now(ws: Any) -> Outbox:
        send_text, write_now = _text_sender(ws)
        return Outbox(send_text, close, 10, write_now)

    def without(ws: Any) -> Outbox:
        send_text, _ = _text_sender(ws)
        return Outbox(send_text, close, 10)

    extra = _retained_per_socket(with_write_now) - _retained_per_socket(without)
    # A bound method (64 B) passes; a function with closure cells does not.
    assert extra <= 64, f"write_now keeps {extra:.0f} B per socket"


async def test_the_tracked_socket_declines_from_the_moment_starlette_closes(monkeypatch):
    """write_now is TrackedWebSocket.write_text itself, without Starlette's state check:
    the close takes the tracked socket's turn (or marks it closed) as Starlette marks
    itself disconnected, so nothing is written at once after it."""
    from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

    from cryptovault import lifecycle
    from cryptovault.lifecycle import TRACKED_SOCKET, TrackedWebSocket
    from tests.test_subscription_outbox import Connection

    monkeypatch.setattr(lifecycle, "LeanWebSocketsProtocol", Connection)
    connection = Connection()
    tracked = TrackedWebSocket(connection.send)

    async def receive() -> Any:
        return {}

    scope = {"type": "websocket", "path": "/", "headers": [], TRACKED_SOCKET: tracked}
    ws = WebSocket(scope, receive, tracked.send)
    ws.application_state = WebSocketState.CONNECTED
    send_text, write_now = _text_sender(ws)
    assert write_now is not None and write_now("a")
    connection.gate.clear()
    sending = asyncio.ensure_future(tracked.send({"type": "websocket.send", "text": "b"}))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(ws.close(1000))
    await asyncio.sleep(0)
    assert ws.application_state is WebSocketState.DISCONNECTED
    assert not write_now("c")
    connection.gate.set()
    await asyncio.wait_for(asyncio.gather(sending, closing), WAIT)
    assert not write_now("d")
    with pytest.raises(WebSocketDisconnect):
        send_text("e")
    assert connection.at_once == ["a"]
    assert [m.get("text") for m in connection.sent] == ["b", None]


async def _raw_subscriber(url: str, user: str) -> tuple[asyncio.StreamReader, Any]:
    host, port = url.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101")
    init = {"type": "connection_init", "payload": {"user": user}}
    writer.write(_client_frame(1, json.dumps(init).encode()))
    subscribe = {"id": "1", "type": "subscribe", "payload": {"query": NOTES}}
    writer.write(_client_frame(1, json.dumps(subscribe).encode()))
    return reader, writer


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), WAIT):
            data += chunk
    return data


@contextlib.asynccontextmanager
async def _flooding(services, user: str) -> AsyncIterator[None]:
    publishing = True

    async def publish() -> None:
        i = 0
        while publishing:
            services.hub.publish(f"notes:{user}", f"n{i}")
            i += 1
            await asyncio.sleep(0)

    publisher = asyncio.create_task(publish())
    try:
        yield
    finally:
        publishing = False
        await publisher


def _close_is_last(data: bytes, code: int) -> None:
    frames = _server_frames(data)
    opcodes = [op for op, _ in frames]
    assert 8 in opcodes, opcodes[-5:]
    close_at = opcodes.index(8)
    assert struct.unpack("!H", frames[close_at][1][:2])[0] == code
    assert opcodes[close_at + 1 :] == [], "frames written after the close frame"


async def test_no_frame_follows_the_reply_to_the_clients_close_mid_fanout(services, at_once):
    async with tracked_view(services) as (url, groups, _):
        reader, writer = await _raw_subscriber(url, "gus")
        await until(lambda: groups.stats()["subscribers"] == 1)
        async with _flooding(services, "gus"):
            await until(lambda: len(at_once) > 50)
            writer.write(_client_frame(8, struct.pack("!H", 1000)))
            data = await _read_to_eof(reader)
        writer.close()
    _close_is_last(data, 1000)


async def test_no_frame_follows_the_keepalive_timeout_close_mid_fanout(services, at_once):
    """The raw client never answers the server's pings: uvicorn closes with 1011 while
    frames are being written at once."""
    options = {"ws_ping_interval": 0.05, "ws_ping_timeout": 0.1}
    async with tracked_view(services, **options) as (url, groups, _):
        reader, writer = await _raw_subscriber(url, "hal")
        await until(lambda: groups.stats()["subscribers"] == 1)
        async with _flooding(services, "hal"):
            data = await _read_to_eof(reader)
        writer.close()
    assert at_once
    _close_is_last(data, 1011)
