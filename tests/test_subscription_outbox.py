"""One socket's send queue (subscriptions/outbox.py): frames go out in order, at once
to a socket that takes them, behind a write that has to wait otherwise; waiting
frames of latest-value streams are replaced per subscription; a failed write ends the
queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from cryptovault import lifecycle
from cryptovault.lifecycle import TRACKED_SOCKET, TrackedWebSocket
from cryptovault.subscriptions.outbox import Outbox
from cryptovault.websocket import _text_sender

WAIT = 10  # seconds: a bound for what must happen, never an assertion on timing


@dataclass(eq=False)
class Owner:
    left: bool = False


class Socket:
    """Takes every frame at once, unless `blocked` (then each write waits until it is
    cleared) or `broken` (then a write fails as a peer gone away does)."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.closed_with: tuple[int, str] | None = None
        self.open = asyncio.Event()
        self.open.set()
        self.broken = False
        self.waiting = 0

    def block(self) -> None:
        self.open.clear()

    def unblock(self) -> None:
        self.open.set()

    async def send_text(self, text: str) -> None:
        if not self.open.is_set():
            self.waiting += 1
            await self.open.wait()
        if self.broken:
            raise OSError("peer gone")
        self.written.append(text)

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


async def until(condition) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0)


async def test_a_socket_that_takes_every_frame_has_it_before_push_returns():
    socket = Socket()
    outbox = Outbox(socket.send_text, socket.close, max_frames=10)
    for n in range(5):
        outbox.push(f"f{n}")
        assert socket.written == [f"f{i}" for i in range(n + 1)]
    assert len(outbox) == 0


async def test_frames_pushed_while_a_write_waits_follow_it_in_order():
    socket = Socket()
    outbox = Outbox(socket.send_text, socket.close, max_frames=10)
    socket.block()
    for n in range(4):
        outbox.push(f"f{n}")
    assert socket.written == [] and len(outbox) == 3
    socket.unblock()
    await until(lambda: len(socket.written) == 4)
    assert socket.written == ["f0", "f1", "f2", "f3"]
    # Idle again: the next frame is written at once.
    outbox.push("f4")
    assert socket.written[-1] == "f4"


async def test_waiting_frames_are_replaced_per_subscription_and_key():
    socket = Socket()
    outbox = Outbox(socket.send_text, socket.close, max_frames=10)
    mine, theirs = Owner(), Owner()
    socket.block()
    outbox.push("mine BTC 1", "BTC", mine)  # being written
    outbox.push("mine BTC 2", "BTC", mine)
    outbox.push("theirs BTC 2", "BTC", theirs)  # the same key, another subscription
    outbox.push("mine BTC 3", "BTC", mine)  # replaces "mine BTC 2" where it waits
    assert outbox.coalesced == 1
    socket.unblock()
    await until(lambda: len(socket.written) == 3)
    assert socket.written == ["mine BTC 1", "mine BTC 3", "theirs BTC 2"]


async def test_frames_of_a_subscription_that_left_are_skipped():
    socket = Socket()
    outbox = Outbox(socket.send_text, socket.close, max_frames=10)
    gone, staying = Owner(), Owner()
    socket.block()
    outbox.push("first", None, staying)
    outbox.push("gone", None, gone)
    outbox.push("staying", None, staying)
    gone.left = True
    socket.unblock()
    await until(lambda: len(outbox) == 0 and socket.written[-1:] == ["staying"])
    assert socket.written == ["first", "staying"]


@pytest.mark.parametrize("waited", [False, True], ids=["at-once", "after-waiting"])
async def test_a_failed_write_ends_the_queue(waited: bool):
    socket = Socket()
    outbox = Outbox(socket.send_text, socket.close, max_frames=10)
    socket.broken = True
    if waited:
        socket.block()
    outbox.push("lost")
    outbox.push("never sent")
    if waited:
        socket.unblock()
    await until(lambda: outbox.closed)
    outbox.push("after")
    assert socket.written == [] and len(outbox) == 0


async def test_a_close_asked_goes_out_behind_the_frames_already_pushed():
    socket = Socket()
    outbox = Outbox(socket.send_text, socket.close, max_frames=10)
    socket.block()
    outbox.push("a")
    outbox.push("b")
    outbox.close_after_sent(4403, "revoked")
    outbox.push("dropped")
    socket.unblock()
    await until(lambda: socket.closed_with is not None)
    assert socket.written == ["a", "b"] and socket.closed_with == (4403, "revoked")


async def test_a_reader_too_far_behind_is_closed():
    socket = Socket()
    outbox = Outbox(socket.send_text, socket.close, max_frames=3)
    socket.block()
    for n in range(5):  # one being written, three waiting, the fifth is one too many
        outbox.push(f"f{n}")
    await until(lambda: socket.closed_with is not None)
    assert outbox.closed and socket.closed_with[0] == 1013
    socket.unblock()


async def test_a_waiting_write_cancelled_with_its_task_frees_the_queue():
    """Shutdown cancels every task: the write that waited ends, and the queue can
    be written again (the next push starts afresh)."""
    socket = Socket()
    outbox = Outbox(socket.send_text, socket.close, max_frames=10)
    socket.block()
    outbox.push("waiting")
    await until(lambda: socket.waiting == 1)
    task = outbox._task  # what shutdown cancels with every other task
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    socket.unblock()
    outbox.push("next")
    assert socket.written == ["next"]


async def test_a_write_refused_at_the_call_ends_the_queue():
    """A sender may refuse a frame when called (the socket is known closed) rather
    than when awaited: the queue ends all the same."""
    socket = Socket()

    def refuse(text: str) -> Any:
        raise WebSocketDisconnect(1006)

    outbox = Outbox(refuse, socket.close, max_frames=10)
    outbox.push("a")
    assert outbox.closed
    outbox.push("b")
    assert socket.written == []


async def test_the_fan_out_sender_marks_a_socket_whose_peer_is_gone_disconnected():
    """The sender handed to the outbox writes through the connection's
    TrackedWebSocket; when the server finds the peer gone (OSError), the Starlette
    socket is marked disconnected, as its own send_text does, and later frames are
    refused at the call."""
    sent: list[Any] = []
    gone = False

    async def server_send(message: Any) -> None:
        if gone:
            raise OSError("peer gone")
        sent.append(message)

    async def receive() -> Any:
        return {"type": "websocket.disconnect"}

    tracked = TrackedWebSocket(server_send)
    scope = {"type": "websocket", "path": "/graphql", "headers": [], TRACKED_SOCKET: tracked}
    ws = WebSocket(scope, receive, tracked.send)
    ws.application_state = WebSocketState.CONNECTED
    send_text, write_now = _text_sender(ws)
    outbox = Outbox(send_text, tracked.close, 10, write_now)
    outbox.push("one")
    assert sent == [{"type": "websocket.send", "text": "one"}]
    gone = True
    outbox.push("two")
    assert outbox.closed
    assert ws.application_state is WebSocketState.DISCONNECTED
    with pytest.raises(WebSocketDisconnect):
        send_text("three")


# -- frames written at once (write_now) ----------------------------------------------------


class AtOnceSocket(Socket):
    """A socket that can also take a frame at once (`write_now`), unless blocked."""

    def __init__(self) -> None:
        super().__init__()
        self.at_once: list[str] = []

    def write_now(self, text: str) -> bool:
        if not self.open.is_set() or self.broken:
            return False  # it would wait, or fail: send_text does it
        self.written.append(text)
        self.at_once.append(text)
        return True


async def test_an_idle_socket_takes_frames_at_once_and_a_blocked_one_through_send_text():
    socket = AtOnceSocket()
    outbox = Outbox(socket.send_text, socket.close, 10, socket.write_now)
    outbox.push("f0")
    assert socket.written == socket.at_once == ["f0"]
    socket.block()
    for n in range(1, 4):
        outbox.push(f"f{n}")
    assert socket.written == ["f0"] and socket.waiting == 1 and len(outbox) == 2
    socket.unblock()
    outbox.push("f4")  # queued behind the write under way: never written at once
    await until(lambda: len(socket.written) == 5)
    assert socket.written == ["f0", "f1", "f2", "f3", "f4"]
    assert socket.at_once == ["f0"]
    outbox.push("f5")  # idle again
    assert socket.at_once == ["f0", "f5"]


async def test_a_write_at_once_that_fails_ends_the_queue():
    socket = AtOnceSocket()

    def gone(text: str) -> bool:
        raise WebSocketDisconnect(1006)

    outbox = Outbox(socket.send_text, socket.close, 10, gone)
    outbox.push("a")
    assert outbox.closed
    outbox.push("b")
    assert socket.written == []


class Connection:
    """Stands for the server's connection: `send` is its own bound method."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.at_once: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, message: Any) -> None:
        await self.gate.wait()
        self.sent.append(message)

    def write_text(self, text: str) -> bool:
        self.at_once.append(text)
        return True


async def test_the_tracked_socket_writes_at_once_only_to_the_servers_own_connection(
    monkeypatch,
):
    monkeypatch.setattr(lifecycle, "LeanWebSocketsProtocol", Connection)
    connection = Connection()
    tracked = TrackedWebSocket(connection.send)
    assert tracked.write_text("one") and connection.at_once == ["one"]

    # Another sender's message is under way: a frame must go after it.
    connection.gate.clear()
    sending = asyncio.ensure_future(tracked.send({"type": "websocket.send", "text": "two"}))
    await asyncio.sleep(0)
    assert not tracked.write_text("three")
    connection.gate.set()
    await asyncio.wait_for(sending, WAIT)
    assert tracked.write_text("four") and connection.at_once == ["one", "four"]
    await tracked.close(1000, "")
    assert not tracked.write_text("five")
    assert connection.at_once == ["one", "four"]

    async def wrapped(message: Any) -> None:  # a layer between the server and the app
        await connection.send(message)

    assert not TrackedWebSocket(wrapped).write_text("six")
    assert connection.at_once == ["one", "four"]
