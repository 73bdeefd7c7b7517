"""uvicorn's WebSocket protocol (websockets-sansio) with less state per connection:
the same frames, handshake, keep-alive pings, close codes and limits, since every
byte on the wire is still written by uvicorn's own code.

What an idle connection of uvicorn's protocol keeps and this one does not
(bench/RESULTS.md, "idle socket"; tracemalloc per connection):
- an `asyncio.Queue` for the ASGI messages received (three deques and an Event with
  a fourth: ~3.4 KB), where a list and a future while someone waits will do: the
  protocol pauses reading while a message waits to be received, so it holds one or
  two at a time;
- an `asyncio.Event` for "the transport may be written to" (a deque: ~0.9 KB),
  where a flag and a future while someone waits will do;
- the handshake response (its header multidict, ~1.6 KB), kept for the connection's
  lifetime though nothing reads it after the handshake. (uvicorn's reference to the
  parsed request goes too, but websockets' parser generator still holds the request
  as a local of its suspended frame.)

And it can write a text frame at once (`write_text`), without the ASGI message, the
coroutines of `send` and websockets' Frame object and its serialization: the
subscription fan-out's path (lifecycle.TrackedWebSocket.write_text). Only when `send`
would write the frame at once anyway; otherwise it declines and the caller awaits `send`.

`cryptovault serve` and the bench's servers (the app and the floor alike) run it:
`uvicorn.Config(..., ws=LeanWebSocketsProtocol)`. It relies on the protocol's
attributes (`queue`, `writable`, `request`, `response`) and on `start_keepalive`
being called once the handshake response is written: `tests/test_wsprotocol.py`
pins the uvicorn source it was checked against.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN

# A server's unmasked final text frame (RFC 6455 §5.2): 0x81, then the payload length
# in 7 bits, or 126 and 16 bits, or 127 and 64 bits (network order).
_SHORT_HEADS = [bytes((0x81, n)) for n in range(126)]
_head16 = struct.Struct("!BBH").pack
_head64 = struct.Struct("!BBQ").pack

__all__ = ["Inbox", "LeanWebSocketsProtocol", "Writable"]


class Inbox:
    """The subset of `asyncio.Queue` uvicorn's protocol uses (`put_nowait`, `get`,
    `empty`), FIFO, unbounded, for any number of getters, cancellation-safe as
    `asyncio.Queue.get` is (a getter cancelled after it was woken passes the wake-up
    on), without its deques."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiters: list[asyncio.Future[None]] | None = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_one()

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif self._items:
                    self._wake_one()  # woken, but not taking it: the next getter may
                raise
        return self._items.pop(0)

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return


class Writable:
    """The subset of `asyncio.Event` uvicorn's protocol uses (`set`, `clear`,
    `is_set`, `wait`), without its deque: waiters are kept only while there are."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class LeanWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, keeping less per connection (above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Writable()  # type: ignore[assignment]
        self.writable.set()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The scope holds the request's headers; nothing reads the request again.
        self.request = None  # type: ignore[assignment]

    def write_text(self, text: str) -> bool:
        """Write `text` as one text frame now, as `send({"type": "websocket.send",
        "text": text})` would without waiting: True once written. False, with nothing
        written, where `send` would wait (the transport paused), refuse (not accepted,
        closed, gone) or do more than frame the bytes (an extension such as
        permessage-deflate, bytes of its own still to write, frame logging on): the
        caller then awaits `send`, which does what it does."""
        conn = self.conn
        if (
            self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or not self.handshake_complete
            or self.initial_response is not None
            or conn.state is not OPEN
            or conn.expect_continuation_frame
            or conn.extensions
            or conn.writes
            or conn.debug
        ):
            return False
        data = text.encode()
        n = len(data)
        if n < 126:
            head = _SHORT_HEADS[n]
        elif n < 65536:
            head = _head16(0x81, 126, n)
        else:
            head = _head64(0x81, 127, n)
        self.transport.write(head + data)
        return True

    def start_keepalive(self) -> None:
        # Called once the handshake response (the accept) is written: nothing reads
        # the response again.
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()
