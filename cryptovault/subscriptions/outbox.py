"""One socket's send queue: every frame of a WebSocket connection goes through it, in
order, written by at most one task at a time.

Fan-out must never wait for a slow client. `push()` does not block: when the queue is
idle it writes at once, in the caller, without a task (a writable socket takes the
frame synchronously: the common case costs no task and no event-loop round trip;
with `write_now`, not even a coroutine); a
write that has to wait goes on in a task of its own, and while it does, later frames
wait in the queue. Frames of latest-value streams carry a coalescing key: an unsent
frame of the same owner with the same key is replaced in place, so a slow client gets
the newest price rather than a backlog of stale ones. Other frames count against
`max_frames`; beyond it the client is too far behind and is closed with
`CLOSE_TOO_SLOW`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Hashable
from typing import Any

log = logging.getLogger(__name__)

# 1013 "Try Again Later" (RFC 6455 registry): the server dropped the connection
# because of a temporary condition; here, the client reads slower than events come.
CLOSE_TOO_SLOW = 1013
CLOSE_TOO_SLOW_REASON = "Client too slow: send queue overflow"
# What stepping a write gives when the write completed at once.
_WRITTEN: Any = object()


class _Entry:
    __slots__ = ("close", "frame", "key", "owner")

    def __init__(
        self,
        frame: str,
        key: Hashable | None,
        owner: Any,
        close: tuple[int, str] | None = None,
    ) -> None:
        self.frame = frame
        self.key = key
        # The subscription this frame belongs to (None for connection messages);
        # frames of a subscription that ended meanwhile are skipped.
        self.owner = owner
        # Not a frame: close the socket with this code and reason.
        self.close = close


class Outbox:
    __slots__ = (
        "_close",
        "_closing",
        "_latest",
        "_loop",
        "_plain",
        "_queue",
        "_send_text",
        "_task",
        "_write_now",
        "closed",
        "closing",
        "coalesced",
        "max_frames",
    )

    def __init__(
        self,
        send_text: Callable[[str], Coroutine[Any, Any, None]],
        close: Callable[[int, str], Awaitable[None]],
        max_frames: int,
        write_now: Callable[[str], bool] | None = None,
    ) -> None:
        """`send_text(frame)`: the write, a coroutine; `write_now(frame)`, if given:
        the write done at once, or declined (False, nothing written) where it would
        wait or fail, so that `send_text` does it."""
        self._send_text = send_text
        self._write_now = write_now
        self._close = close
        self.max_frames = max_frames
        self._loop = asyncio.get_running_loop()
        # Created when a frame first has to wait (most sockets never need one).
        self._queue: deque[_Entry] | None = None
        self._latest: dict[Hashable, _Entry] = {}
        self._plain = 0  # queued frames without a coalescing key
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self.closed = False
        # A close is queued behind the frames already pushed: push no more.
        self.closing = False
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._queue) if self._queue is not None else 0

    def push(self, frame: str, key: Hashable | None = None, owner: Any = None) -> None:
        """Send `frame` after those pushed before it. `owner`: the subscription it
        belongs to (skipped once the owner has `left`); `key`: frames of one owner
        with the same key replace each other while they wait."""
        if self.closed or self.closing:
            return
        if self._task is None and not self._queue:
            # Idle socket (the common case): write now, in the caller, up to the first
            # wait; nothing to queue or coalesce. A task per frame (even an eager one)
            # cost each delivered message ~0.5 µs more.
            try:
                if self._write_now is not None and self._write_now(frame):
                    return
                write = self._send_text(frame)
                # Stepped by `next` with a default: a write that completes ends in
                # C, without the StopIteration (and its traceback and frame object)
                # that `write.send(None)` raises here (~1,100 instructions a frame).
                waiting = next(write.__await__(), _WRITTEN)
            except Exception:
                self._discard()  # the peer went away (as in _flush)
                return
            if waiting is _WRITTEN:
                return
            # The socket cannot take it now: the write goes on in a task, and frames
            # pushed meanwhile wait behind it. (Eager: started, its `finally` runs
            # even if it is cancelled before the loop gets to it.)
            task = asyncio.Task(
                self._flush(_driven(write, waiting)), loop=self._loop, eager_start=True
            )
            if not task.done():
                self._task = task
            return
        if key is not None:
            key = (owner, key)
            waiting = self._latest.get(key)
            if waiting is not None:
                waiting.frame = frame
                self.coalesced += 1
                return
        elif self._plain >= self.max_frames:
            self._overflow()
            return
        entry = _Entry(frame, key, owner)
        if key is None:
            self._plain += 1
        else:
            self._latest[key] = entry
        self._enqueue(entry)

    def close_after_sent(self, code: int, reason: str) -> None:
        """Close the socket once the frames pushed so far are written; later pushes
        are dropped."""
        if self.closed or self.closing:
            return
        self.closing = True
        self._plain += 1
        self._enqueue(_Entry("", None, None, close=(code, reason)))

    def _enqueue(self, entry: _Entry) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(entry)
        if self._task is None:
            task = asyncio.Task(self._flush(), loop=self._loop, eager_start=True)
            if not task.done():
                self._task = task

    async def _flush(self, first: Awaitable[None] | None = None) -> None:
        """Write what waits in the queue, in order (after `first`: a write under way)."""
        try:
            if first is not None:
                await first
            while queue := self._queue:
                entry = queue.popleft()
                if entry.key is None:
                    self._plain -= 1
                else:
                    del self._latest[entry.key]
                if entry.close is not None:
                    self._discard()
                    await self._close_quietly(*entry.close)
                    return
                owner = entry.owner
                if owner is not None and owner.left:
                    continue
                await self._send_text(entry.frame)
        except Exception:
            # The peer went away: the connection's reader sees the disconnect and
            # ends its subscriptions; nothing more can be written.
            self._discard()
        finally:
            self._task = None

    def _discard(self) -> None:
        self.closed = True
        self._queue = None
        self._latest.clear()
        self._plain = 0

    def _overflow(self) -> None:
        log.warning(
            "closing a WebSocket that reads too slowly",
            extra={"queued": len(self), "close_code": CLOSE_TOO_SLOW},
        )
        self._discard()
        task = asyncio.Task(
            self._close_quietly(CLOSE_TOO_SLOW, CLOSE_TOO_SLOW_REASON),
            loop=self._loop,
            eager_start=True,
        )
        if not task.done():
            self._closing = task

    async def _close_quietly(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._close(code, reason)


@types.coroutine
def _driven(coroutine: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, Any]:
    """Await the rest of a coroutine that was stepped outside any task and now waits
    for `waiting` (what it yielded: the future it awaits), as if it had been awaited
    here from the start."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as exc:  # cancellation included: the coroutine decides
            try:
                waiting = coroutine.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = coroutine.send(sent)
            except StopIteration:
                return
