"""Process lifecycle: the registry of live WebSocket connections and the graceful
shutdown on SIGTERM.

Shutdown order (README "Operations and observability"):
1. stop accepting connections (the listening sockets close);
2. close every WebSocket with 1001 "going away", so clients reconnect elsewhere;
3. let in-flight HTTP requests finish, for at most SHUTDOWN_TIMEOUT_SECONDS;
4. the app's lifespan ends: the feed lease is released (another instance takes
   over), pending candles are written, the store is closed, Sentry is flushed.

uvicorn's own shutdown closes WebSockets with 1012 (service restart) and only after
the listening sockets; `GracefulServer` runs steps 1-2 first, then uvicorn's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import inspect
import logging
import socket
import sys
import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptovault.wsprotocol import LeanWebSocketsProtocol

if TYPE_CHECKING:
    from cryptovault.observability.metrics import Metrics

log = logging.getLogger(__name__)

GOING_AWAY = 1001
# The scope key under which WebSocketTracking leaves the connection's TrackedWebSocket.
TRACKED_SOCKET = "cryptovault.tracked_socket"


# sentry_sdk/integrations/asgi.py, whole: its `_sentry_wrapped_send` hands every
# message to the `send` it wraps, looking only at `http.response.start`.
SENTRY_ASGI_SHA256 = "c54535cd979cddf445b07bdf9235b02db268f42df90242e86498e1924f24b6a5"


def _sentry_send_code() -> types.CodeType | None:
    """The code of Sentry's ASGI send wrapper, if Sentry's module is loaded and is the
    one checked. (Not remembered while it is not loaded: it may be later.)"""
    module = sys.modules.get("sentry_sdk.integrations.asgi")
    return None if module is None else _wrapper_code(module)


@functools.cache
def _wrapper_code(module: types.ModuleType) -> types.CodeType | None:
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    if hashlib.sha256(source.encode()).hexdigest() != SENTRY_ASGI_SHA256:
        return None
    for const in module.SentryAsgiMiddleware._run_app.__code__.co_consts:
        if isinstance(const, types.CodeType) and const.co_name == "_sentry_wrapped_send":
            return const
    return None


def server_connection(send: Send) -> LeanWebSocketsProtocol | None:
    """The server connection whose own `send` this is, seen through Sentry's send
    wrapper (a pass-through for WebSocket messages; SENTRY_DSN set); None when
    anything else is in between."""
    for _ in range(3):
        owner = getattr(send, "__self__", None)
        if isinstance(owner, LeanWebSocketsProtocol):
            return owner
        code: types.CodeType | None = getattr(send, "__code__", None)
        closure: tuple[types.CellType, ...] | None = getattr(send, "__closure__", None)
        if (
            code is None
            or closure is None
            or code.co_name != "_sentry_wrapped_send"
            or code is not _sentry_send_code()
        ):
            return None
        send = closure[code.co_freevars.index("send")].cell_contents
    return None


class TrackedWebSocket:
    """One connection: its ASGI `send`, serialised so that the server's close frame
    and the app's own messages never interleave, and silenced after the close."""

    __slots__ = (
        "_busy",
        "_on_accept",
        "_protocol",
        "_send",
        "_waiters",
        "accepted",
        "client_code",
        "close_code",
        "closed",
        "done",
        "finished",
        "on_lost",
    )

    def __init__(self, send: Send, on_accept: Callable[[], None] | None = None) -> None:
        self._send = send
        self._on_accept = on_accept
        # The server's connection, when `send` is its own (no layer in between that
        # could see or change the frames): `write_text` writes straight to it.
        self._protocol = server_connection(send)
        # A lock of our own (asyncio.Lock costs three coroutine calls per message,
        # paid for every frame of a subscription fan-out): `_busy` while a message
        # is being handed to the server, later senders queue in `_waiters` (FIFO).
        self._busy = False
        self._waiters: collections.deque[asyncio.Future[None]] | None = None
        self.accepted = False
        self.closed = False
        self.close_code: int | None = None
        # The client's close code, noted by whoever reads the disconnect (the
        # GraphQL view's WebSocket adapter): a wrapper of `receive` to see it would
        # be a coroutine frame per idle socket.
        self.client_code: int | None = None
        # The app's handler returned; `finished` is made only when someone waits
        # (shutdown): an Event per idle socket would cost ~760 B.
        self.done = False
        self.finished: asyncio.Event | None = None
        # Called when `send_text` finds the peer gone (the server raised OSError).
        self.on_lost: Callable[[], None] | None = None

    def finish(self) -> None:
        self.done = True
        if self.finished is not None:
            self.finished.set()

    async def wait_finished(self) -> None:
        if self.done:
            return
        if self.finished is None:
            self.finished = asyncio.Event()
        await self.finished.wait()

    async def send(self, message: Message) -> None:
        if self._busy:
            await self._wait_turn()
        else:
            self._busy = True
        try:
            if self.closed:
                # The server already closed the socket (shutdown): the app's late
                # messages, its own close included, have nowhere to go.
                return
            if message["type"] == "websocket.accept":
                self.accepted = True
                if self._on_accept is not None:
                    self._on_accept()
            elif message["type"] == "websocket.close":
                self.closed = True
                self.close_code = message.get("code", 1000)
            await self._send(message)
        finally:
            self._next()

    async def send_text(self, text: str) -> None:
        """`send` of one text frame, the subscription fan-out's path: no message
        dispatch, and straight from the app (`scope[TRACKED_SOCKET]`), past the
        layers between (which pass WebSocket frames through untouched)."""
        if self._busy:
            await self._wait_turn()
        else:
            self._busy = True
        try:
            if not self.closed:
                await self._send({"type": "websocket.send", "text": text})
        except OSError:
            if self.on_lost is not None:
                self.on_lost()
            raise
        finally:
            self._next()

    def write_text(self, text: str) -> bool:
        """`send_text` done at once, without a coroutine, when nothing would make it
        wait: no other sender's turn, not closed, and the connection takes the frame
        now (LeanWebSocketsProtocol.write_text). False: nothing was written, await
        `send_text`."""
        protocol = self._protocol
        if protocol is None or self._busy or self.closed:
            return False
        return protocol.write_text(text)

    async def close(self, code: int, reason: str) -> None:
        if self._busy:
            await self._wait_turn()
        else:
            self._busy = True
        try:
            if self.closed:
                return
            self.closed = True
            self.close_code = code
            with contextlib.suppress(Exception):  # the peer may be gone already
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
        finally:
            self._next()

    async def _wait_turn(self) -> None:
        """Until the sender before us is done; then it is our turn (`_busy` stays)."""
        if self._waiters is None:
            self._waiters = collections.deque()
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._next()  # the turn was handed to us: pass it on
            else:
                with contextlib.suppress(ValueError):  # skipped by _next() already
                    self._waiters.remove(turn)
            raise

    def _next(self) -> None:
        """Hand the turn to the next waiting sender, or free it."""
        waiters = self._waiters
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False


class WebSocketRegistry:
    """Every WebSocket connection of this instance: their count (metrics, admin
    stats) and closing them all at shutdown."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._sockets: set[TrackedWebSocket] = set()
        self.metrics = metrics
        self.accepting = True

    @property
    def count(self) -> int:
        """Open (accepted, not yet closed) connections."""
        return sum(1 for s in self._sockets if s.accepted and not s.closed)

    def _add(self, sock: TrackedWebSocket) -> None:
        self._sockets.add(sock)

    def _remove(self, sock: TrackedWebSocket) -> None:
        self._sockets.discard(sock)

    async def close_all(
        self, code: int = GOING_AWAY, reason: str = "Server shutting down", timeout: float = 5.0
    ) -> int:
        """Refuse new connections, close the open ones with `code`, and wait (at most
        `timeout` seconds) for their handlers to finish. Returns how many it closed."""
        self.accepting = False
        sockets = list(self._sockets)
        if not sockets:
            return 0
        await asyncio.gather(*(s.close(code, reason) for s in sockets))
        waiting = [asyncio.ensure_future(s.wait_finished()) for s in sockets]
        _, pending = await asyncio.wait(waiting, timeout=timeout)
        for future in pending:
            future.cancel()
        if pending:
            log.warning(
                "websocket handlers still running after close",
                extra={"handlers": len(pending), "timeout_s": timeout},
            )
        log.info("websockets closed", extra={"connections": len(sockets), "code": code})
        return len(sockets)


class WebSocketTracking:
    """ASGI middleware registering each WebSocket connection in the app's
    `services.websockets` registry for its lifetime, with one log line when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = getattr(getattr(scope.get("app"), "state", None), "services", None)
        registry: WebSocketRegistry | None = getattr(services, "websockets", None)
        if scope["type"] != "websocket" or registry is None:
            await self.app(scope, receive, send)
            return
        if not registry.accepting:
            await send({"type": "websocket.close", "code": GOING_AWAY})
            return
        metrics = registry.metrics
        sock = TrackedWebSocket(
            send, metrics.websocket_connections_opened.inc if metrics is not None else None
        )
        registry._add(sock)
        scope[TRACKED_SOCKET] = sock
        start = time.perf_counter()
        try:
            await self.app(scope, receive, sock.send)
        finally:
            registry._remove(sock)
            sock.finish()
            if sock.accepted:
                log.info(
                    "websocket closed",
                    extra={
                        "path": scope.get("path"),
                        "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                        "close_code": sock.close_code or sock.client_code,
                        "closed_by": "server" if sock.close_code else "client",
                    },
                )


class GracefulServer(uvicorn.Server):
    """uvicorn, with WebSockets closed with 1001 right after the listening sockets
    close, before uvicorn waits for in-flight requests
    (`timeout_graceful_shutdown`) and runs the app's lifespan shutdown."""

    def __init__(self, config: uvicorn.Config, websockets_timeout: float = 5.0) -> None:
        super().__init__(config)
        self.websockets_timeout = websockets_timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        log.info("shutting down: no new connections; closing websockets")
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        registry = _registry(self.config.loaded_app)
        if registry is not None:
            await registry.close_all(GOING_AWAY, timeout=self.websockets_timeout)
        await super().shutdown(sockets=None)


def _registry(app: Any) -> WebSocketRegistry | None:
    # uvicorn wraps the app (proxy headers, ...): follow `.app` down to Starlette.
    for _ in range(10):
        services = getattr(getattr(app, "state", None), "services", None)
        if services is not None:
            return getattr(services, "websockets", None)
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None
