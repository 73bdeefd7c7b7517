"""WebSocket hardening on top of Strawberry's protocol handlers.

Close codes (README "Protecting the API"):
- 4400 malformed message, 4401 subscribe before connection_ack, 4403 credentials
  refused (at connection_init, or revoked later: websocket_trust.py) and nothing
  else, 4408 no connection_init in time, 4409 duplicate operation id,
  4429 too many connections for this identity or awaiting connection_init from this
  address, or a second connection_init,
  4499 no pong to the server's ping in time (graphql-transport-ws),
  1009 message larger than WS_MAX_MESSAGE_BYTES, 1013 credentials could not be
  checked (try again), 1008 handshake from an origin that is not allowed (answered
  403 before the socket opens).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping
from json import JSONDecodeError
from typing import Any

from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from cryptovault.errors import DomainError, RateLimited
from cryptovault.resolvers.context import Context
from cryptovault.websocket_trust import (
    CLOSE_FORBIDDEN,
    CLOSE_TOO_MANY,
    CLOSE_TRY_AGAIN,
    CredentialsRefused,
    CredentialsUnavailable,
    TrustedSocket,
    close_reason,
)

log = logging.getLogger(__name__)

CLOSE_INVALID = 4400
CLOSE_INIT_TIMEOUT = 4408
CLOSE_NO_PONG = 4499
CLOSE_TOO_BIG = 1009


class TooManyConnections(Exception):
    """The identity already holds WS_MAX_CONNECTIONS_PER_IDENTITY sockets here."""


class LimitedWebSocketAdapter(ASGIWebSocketAdapter):
    """Refuses messages over WS_MAX_MESSAGE_BYTES (uvicorn's ws_max_size is set to the
    same value when served by `cryptovault serve`; this also holds behind any server)."""

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object]:
        limit = self.view.settings.ws_max_message_bytes  # type: ignore[attr-defined]
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                try:
                    text = await self.ws.receive_text()
                except KeyError as exc:
                    raise NonTextMessageReceived from exc
                if len(text) > limit:
                    await self.close(CLOSE_TOO_BIG, "Message too big")
                    return
                try:
                    yield self.view.decode_json(text)
                except JSONDecodeError as exc:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from exc
        except WebSocketDisconnect:
            pass


def _error_payload(exc: DomainError) -> dict[str, Any]:
    return {"message": exc.message, "extensions": {"code": exc.code, **exc.extensions}}


def _valid_operation(message: Mapping[str, Any]) -> bool:
    payload = message.get("payload")
    return (
        isinstance(message.get("id"), str)
        and isinstance(payload, dict)
        and isinstance(payload.get("query", ""), (str, type(None)))
        and isinstance(payload.get("variables") or {}, dict)
        and isinstance(payload.get("extensions") or {}, dict)
        and isinstance(payload.get("operationName") or "", str)
    )


async def _resolve_document(context: Context, payload: dict[str, Any]) -> None:
    """Persisted queries (and trusted documents) over WebSocket too."""
    persisted = context.services.persisted_queries
    payload["query"] = await persisted.resolve(payload.get("query"), payload.get("extensions"))
    if not payload["query"]:
        from cryptovault.errors import BadUserInput

        raise BadUserInput("No GraphQL query found in the message")


class _ConnectionSlot(TrustedSocket):
    """Mixin: holds the identity's connection slot and the credential's watch for the
    socket's lifetime."""

    context: Context

    connection_acknowledged: bool

    def _release_slot(self) -> None:
        self._release_credential()
        key = self.context.state.pop("ws_slot", None)
        if key is not None:
            self.context.services.limiter.release_connection(key)

    async def _initialise(
        self, message: Any, protocol_init: Callable[[Any], Awaitable[None]]
    ) -> DomainError | None:
        """The protocol's connection_init; the refusal if the credential is refused
        (the protocol tells the client), else None (other failures are closed here
        with their own code)."""
        self._initialising()
        try:
            await protocol_init(message)
        except TooManyConnections:
            await self.websocket.close(CLOSE_TOO_MANY, "Too many connections")
        except CredentialsRefused as refused:
            return refused.error
        except CredentialsUnavailable:
            await self.websocket.close(CLOSE_TRY_AGAIN, "Credentials cannot be checked now")
        else:
            if self.connection_acknowledged:
                self._credential_accepted()
        return None


class KeepAlive:
    """Server pings for every acknowledged graphql-transport-ws socket of one event
    loop (and one interval/timeout pair), from one task: a task per socket would cost
    each idle subscriber ~2 KB more. Each socket is pinged `interval` seconds after
    its last ping (or its ack); one that has not answered `timeout` seconds after a
    ping is closed with 4499. The task ends with the last socket."""

    _instances: weakref.WeakKeyDictionary[
        asyncio.AbstractEventLoop, dict[tuple[float, float], KeepAlive]
    ] = weakref.WeakKeyDictionary()

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        # How often sockets are checked: the deadlines are met within a quarter.
        self.period = max(0.01, min(1.0, interval / 4, timeout / 4))
        self.sockets: dict[TransportWSHandler, None] = {}
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    @classmethod
    def of(cls, interval: float, timeout: float) -> KeepAlive:
        loop = asyncio.get_running_loop()
        by_settings = cls._instances.setdefault(loop, {})
        keep_alive = by_settings.get((interval, timeout))
        if keep_alive is None:
            keep_alive = by_settings[(interval, timeout)] = cls(interval, timeout)
        return keep_alive

    def add(self, socket: TransportWSHandler) -> None:
        socket.next_ping = asyncio.get_running_loop().time() + self.interval
        socket.pong_deadline = None
        self.sockets[socket] = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="ws-keep-alive")

    def discard(self, socket: TransportWSHandler) -> None:
        self.sockets.pop(socket, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.sockets:
            await asyncio.sleep(self.period)
            now = loop.time()
            for socket in list(self.sockets):
                if socket.pong_deadline is not None:
                    if now >= socket.pong_deadline:
                        self.discard(socket)
                        self._spawn(socket.close_without_pong())
                elif now >= socket.next_ping:
                    socket.next_ping = now + self.interval
                    socket.pong_deadline = now + self.timeout
                    self._spawn(socket.ping())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)


class TransportWSHandler(_ConnectionSlot, BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, plus: server pings (a client that does not answer in time
    is closed with 4499), connection caps, persisted queries, message checks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_alive: KeepAlive | None = None
        self.next_ping = 0.0  # loop time; set by KeepAlive
        self.pong_deadline: float | None = None  # a ping is unanswered until then

    async def handle(self) -> None:
        if not await self._claim_pending():
            return
        try:
            await super().handle()
        finally:
            if self._keep_alive is not None:
                self._keep_alive.discard(self)
            self._release_slot()

    def _operation_tasks(self) -> list[asyncio.Task[Any]]:
        return [op.task for op in self.operations.values() if op.task is not None]

    async def handle_message(self, message: Any) -> None:  # type: ignore[override]
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.handle_invalid_message("Messages must be JSON objects with a type")
            return
        if message["type"] == "complete" and not isinstance(message.get("id"), str):
            # Strawberry looks the id up in a dict: a list would raise, not close.
            await self.handle_invalid_message("Operation messages need a string id")
            return
        await super().handle_message(message)  # type: ignore[arg-type]

    async def handle_connection_init(self, message: Any) -> None:  # type: ignore[override]
        refused = await self._initialise(message, super().handle_connection_init)
        if refused is not None:
            await self.websocket.close(CLOSE_FORBIDDEN, close_reason(refused.message))
            return
        if self.connection_acknowledged and self._keep_alive is None:
            settings = self.context.services.settings
            self._keep_alive = KeepAlive.of(
                settings.ws_ping_interval_seconds, settings.ws_ping_timeout_seconds
            )
            self._keep_alive.add(self)

    async def handle_pong(self, message: Any) -> None:  # type: ignore[override]
        self.pong_deadline = None

    async def ping(self) -> None:
        with contextlib.suppress(Exception):  # the socket went away meanwhile
            await self.send_message({"type": "ping"})

    async def close_without_pong(self) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(CLOSE_NO_PONG, "No pong received in time")

    async def handle_subscribe(self, message: Any) -> None:  # type: ignore[override]
        if not self.connection_acknowledged:
            await super().handle_subscribe(message)
            return
        if not _valid_operation(message):
            await self.handle_invalid_message("Invalid subscribe message")
            return
        await self._current_credential()
        error: DomainError | None = None
        limit = self.max_subscriptions_per_connection
        if (
            message["id"] not in self.operations
            and limit is not None
            and len(self.operations) >= limit
        ):
            error = RateLimited(
                f"At most {limit} operations may run at once on one connection", maximum=limit
            )
        else:
            payload = dict(message["payload"])
            try:
                await _resolve_document(self.context, payload)
            except DomainError as exc:
                error = exc
            message = {**message, "payload": payload}
        if error is not None:
            error_message: Any = {
                "id": message["id"],
                "type": "error",
                "payload": [_error_payload(error)],
            }
            await self.send_message(error_message)
            return
        await super().handle_subscribe(message)


class LegacyWSHandler(_ConnectionSlot, BaseGraphQLWSHandler[Context, None]):
    """graphql-ws (legacy): the same caps and checks; keep-alive is the protocol's
    `ka` message (it has no pong: dead peers are found by the server's protocol-level
    pings)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_timeout: asyncio.Task[None] | None = None

    async def handle(self) -> None:
        if not await self._claim_pending():
            return
        self._init_timeout = asyncio.create_task(self._close_without_init())
        try:
            await super().handle()
        finally:
            self._init_timeout.cancel()
            with contextlib.suppress(BaseException):
                await self._init_timeout
            self._release_slot()

    def _operation_tasks(self) -> list[asyncio.Task[Any]]:
        return list(self.tasks.values())

    async def _close_without_init(self) -> None:
        await asyncio.sleep(self.context.services.settings.ws_init_timeout_seconds)
        if not self.connection_acknowledged:
            with contextlib.suppress(Exception):
                await self.websocket.close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")

    async def handle_message(self, message: Any) -> None:  # type: ignore[override]
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.websocket.close(CLOSE_INVALID, "Messages must be JSON objects with a type")
            return
        if message["type"] in ("start", "stop") and not isinstance(message.get("id"), str):
            await self.websocket.close(CLOSE_INVALID, "Operation messages need a string id")
            return
        await super().handle_message(message)  # type: ignore[arg-type]

    async def handle_connection_init(self, message: Any) -> None:  # type: ignore[override]
        if self.connection_acknowledged:
            await self.websocket.close(CLOSE_TOO_MANY, "Too many initialisation requests")
            return
        refused = await self._initialise(message, super().handle_connection_init)
        if refused is not None:
            # Strawberry would close this protocol with 1011: refused credentials
            # close with 4403 on both protocols.
            payload = {"message": refused.message, "code": refused.code, **refused.extensions}
            await self.send_message({"type": "connection_error", "payload": payload})
            await self._close_after_sent(CLOSE_FORBIDDEN, close_reason(refused.message))

    async def handle_start(self, message: Any) -> None:  # type: ignore[override]
        if not self.connection_acknowledged:
            await super().handle_start(message)
            return
        if not _valid_operation(message):
            await self.websocket.close(CLOSE_INVALID, "Invalid start message")
            return
        await self._current_credential()
        payload = dict(message["payload"])
        try:
            await _resolve_document(self.context, payload)
        except DomainError as exc:
            error_message: Any = {
                "type": "error",
                "id": message["id"],
                "payload": _error_payload(exc),
            }
            await self.send_message(error_message)
            return
        start: Any = {**message, "payload": payload}
        await super().handle_start(start)
