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
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from cryptovault.observability.metrics import Metrics

log = logging.getLogger(__name__)

GOING_AWAY = 1001


class TrackedWebSocket:
    """One connection: its ASGI `send`, serialised so that the server's close frame
    and the app's own messages never interleave, and silenced after the close."""

    def __init__(self, send: Send, on_accept: Callable[[], None] | None = None) -> None:
        self._send = send
        self._on_accept = on_accept
        self._lock = asyncio.Lock()
        self.accepted = False
        self.closed = False
        self.close_code: int | None = None
        self.finished = asyncio.Event()

    async def send(self, message: Message) -> None:
        async with self._lock:
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

    async def close(self, code: int, reason: str) -> None:
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            self.close_code = code
            with contextlib.suppress(Exception):  # the peer may be gone already
                await self._send({"type": "websocket.close", "code": code, "reason": reason})


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
        waiting = [asyncio.ensure_future(s.finished.wait()) for s in sockets]
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
        client_code: int | None = None

        async def receive_noting_close() -> Message:
            nonlocal client_code
            message = await receive()
            if message["type"] == "websocket.disconnect":
                client_code = message.get("code")
            return message

        registry._add(sock)
        start = time.perf_counter()
        try:
            await self.app(scope, receive_noting_close, sock.send)
        finally:
            registry._remove(sock)
            sock.finished.set()
            if sock.accepted:
                log.info(
                    "websocket closed",
                    extra={
                        "path": scope.get("path"),
                        "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                        "close_code": sock.close_code or client_code,
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
