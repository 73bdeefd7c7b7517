"""The WebSocket transport: both GraphQL-over-WebSocket protocols (graphql-transport-ws
and the legacy graphql-ws), their protections, the credential a socket holds, and
grouped subscription execution beneath Strawberry's protocol handlers. README
"WebSocket", "Protecting the API", "Subscriptions at scale".

Layers of one socket, outermost first (each a mixin over Strawberry's base handler):
- `_Grouped*`: a subscription operation joins a group (subscriptions/groups.py)
  instead of running its own stream; every frame goes through the connection's
  Outbox (ordered, never blocking the fan-out; slow readers are closed with 1013:
  subscriptions/outbox.py). Queries and mutations over a socket, and every operation
  in "naive" mode (`view.subscription_groups` is None), run exactly as Strawberry
  runs them, except that the legacy protocol serves queries and mutations too (as
  Apollo's subscriptions-transport-ws does; Strawberry's handler refuses them).
- `TransportWSHandler` / `LegacyWSHandler`: message checks, connection caps,
  persisted queries, keep-alive (server pings on graphql-transport-ws, `ka` on
  graphql-ws).
- `TrustedSocket`: what a socket may do as its credential changes:
  - Before connection_init a socket is nobody's: it counts against its client
    address (`WS_MAX_PENDING_PER_IP`), not against an identity, until it initialises.
  - At connection_init the credential is checked (`WebSocketTransport.on_ws_connect`)
    and the socket holds its watch (security/credentials.py) for its lifetime.
  - Before each operation the socket waits for a change announced on the bus to be
    read, then runs as the credential's latest state (role, freeze); once the access
    token expired, as an anonymous caller whose private fields fail with
    TOKEN_EXPIRED (as over HTTP). Its private streams end at expiry (`while_valid`);
    public ones go on.
  - When the credential is revoked, its private streams end by themselves
    (`while_valid`: UNAUTHENTICATED with the reason); the socket lets their last
    frames out, then closes with 4403. Public streams end with the socket.
`WebSocketTransport` is the view's side (mixed into app.GraphQLApp): the handler
classes, the size-limited adapter, the pending-socket counts, the subscription
groups and the credential check at connection_init.

Close codes (README "Protecting the API"):
- 4400 malformed message, 4401 subscribe before connection_ack, 4403 credentials
  refused (at connection_init, or revoked later) and nothing else, so a client can
  stop retrying (graphql-ws retries 4403 by default: README "WebSocket"),
  4408 no connection_init in time, 4409 duplicate operation id,
  4429 too many connections for this identity or awaiting connection_init from this
  address, or a second connection_init,
  4499 no pong to the server's ping in time (graphql-transport-ws),
  1009 message larger than WS_MAX_MESSAGE_BYTES, 1013 credentials could not be
  checked (try again) or a reader too slow for its send queue, 1008 handshake from an
  origin that is not allowed (answered 403 before the socket opens).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import weakref
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from datetime import timedelta
from json import JSONDecodeError
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.types.unset import UNSET, UnsetType
from strawberry.utils.aio import aclosing

from cryptovault.config import Settings
from cryptovault.errors import BadUserInput, DomainError, RateLimited, Unauthenticated
from cryptovault.extensions.limits import identity_key
from cryptovault.lifecycle import TRACKED_SOCKET, TrackedWebSocket
from cryptovault.logs import user_id_var
from cryptovault.resolvers.context import Context
from cryptovault.subscriptions.groups import (
    LEGACY_WS,
    NOT_A_SUBSCRIPTION,
    TRANSPORT_WS,
    Failed,
    Member,
    Prepared,
    Rejected,
    SubscriptionGroups,
)
from cryptovault.subscriptions.outbox import Outbox

log = logging.getLogger(__name__)

CLOSE_INVALID = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_INIT_TIMEOUT = 4408
CLOSE_TOO_MANY = 4429
CLOSE_NO_PONG = 4499
CLOSE_TOO_BIG = 1009
# 1013 "Try Again Later": credentials could not be checked (store unreachable);
# graphql-ws clients retry it.
CLOSE_TRY_AGAIN = 1013
# How long a revoked socket waits for its private operations to send their last
# frames before it closes anyway (queries and mutations in flight are also let
# finish within it; in naive subscription mode, public streams make it wait it out).
REVOKED_CLOSE_GRACE = 2.0
MAX_CLOSE_REASON = 120  # bytes; a close frame's reason holds at most 123


class CredentialsRefused(Exception):
    """connection_init carried a credential that is refused (close 4403)."""

    def __init__(self, error: DomainError) -> None:
        super().__init__(error.message)
        self.error = error


class CredentialsUnavailable(Exception):
    """The credential could not be checked (close 1013, try again later)."""


class PendingSockets:
    """Accepted sockets per client address that have not sent connection_init yet."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count: Counter[str] = Counter()

    def claim(self, address: str) -> bool:
        if self._count[address] >= self.limit:
            return False
        self._count[address] += 1
        return True

    def release(self, address: str) -> None:
        self._count[address] -= 1
        if self._count[address] <= 0:
            del self._count[address]


def close_reason(text: str) -> str:
    encoded = text.encode()
    if len(encoded) <= MAX_CLOSE_REASON:
        return text
    return encoded[:MAX_CLOSE_REASON].decode(errors="ignore")


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
                    message = self.view.decode_json(text)
                except JSONDecodeError as exc:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from exc
                    continue
                # While the socket waits for its next message, the last one (its text
                # and what it decoded to) is not kept: ~0.8 KB per idle socket.
                del text
                yield message
                del message
        except WebSocketDisconnect as gone:
            # The client's close code, for the connection's log line (lifecycle.py).
            tracked: TrackedWebSocket | None = self.ws.scope.get(TRACKED_SOCKET)
            if tracked is not None:
                tracked.client_code = gone.code


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
        raise BadUserInput("No GraphQL query found in the message")


# -- the credential a socket holds ---------------------------------------------------


class TrustedSocket:
    """Mixin for both protocol handlers: the pending-socket cap, the
    credential's watch, and the close when it is revoked."""

    context: Context
    view: Any
    websocket: Any

    _pending_address: str | None = None
    _revocation: asyncio.Task[None] | None = None

    # -- before connection_init -----------------------------------------------------

    async def _claim_pending(self) -> bool:
        """False (and the socket closed with 4429) when its address already has
        WS_MAX_PENDING_PER_IP sockets waiting for their connection_init."""
        pending: PendingSockets = self.view.pending_sockets
        address = self.context.client_key
        if not pending.claim(address):
            with contextlib.suppress(Exception):
                await self.websocket.close(
                    CLOSE_TOO_MANY, "Too many connections awaiting connection_init"
                )
            return False
        self._pending_address = address
        return True

    def _initialising(self) -> None:
        """connection_init arrived: from now on the socket counts for its identity."""
        if self._pending_address is not None:
            self.view.pending_sockets.release(self._pending_address)
            self._pending_address = None

    # -- the credential -------------------------------------------------------------

    def _credential_accepted(self) -> None:
        """After connection_ack: follow the credential until the socket closes."""
        viewer = self.context.viewer
        watch = viewer.watch if viewer is not None else None
        if watch is None:
            return
        watch.listen(self._credential_revoked)
        if watch.error is not None:  # revoked while the ack was being sent
            watch.unlisten(self._credential_revoked)
            self._credential_revoked(watch.error)

    async def _current_credential(self) -> None:
        """Before an operation: run it as the credential stands now. Once the access
        token expired, the socket runs as HTTP runs a request carrying it: as an
        anonymous caller (the address's budget, the anonymous introspection policy)
        whose private fields fail with UNAUTHENTICATED, reason TOKEN_EXPIRED."""
        viewer = self.context.viewer
        if viewer is not None:
            try:
                viewer.check_not_expired()
            except Unauthenticated as expired:
                self.context.viewer = None
                self.context.auth_error = expired
                return
        watch = viewer.watch if viewer is not None else None
        if watch is None:
            return
        await watch.settled()
        if watch.error is None:
            self.context.viewer = watch.viewer

    def _credential_revoked(self, error: DomainError) -> None:
        if self._revocation is None:
            self._revocation = asyncio.create_task(self._close_revoked(error))

    async def _close_revoked(self, error: DomainError) -> None:
        private = [t for t in self._operation_tasks() if not self._runs_shared_stream(t)]
        if private:
            await asyncio.wait(private, timeout=REVOKED_CLOSE_GRACE)
        viewer = self.context.viewer
        log.info(
            "websocket credential revoked",
            extra={
                "user_id": viewer.user_id if viewer is not None else None,
                "reason": error.extensions.get("reason"),
                "close_code": CLOSE_FORBIDDEN,
            },
        )
        with contextlib.suppress(Exception):
            await self._close_after_sent(CLOSE_FORBIDDEN, close_reason(error.message))

    def _release_credential(self) -> None:
        self._initialising()
        if self._revocation is not None and not self._revocation.done():
            self._revocation.cancel()
        viewer = self.context.state.pop("ws_credential", None)
        if viewer is not None and viewer.watch is not None:
            viewer.watch.unlisten(self._credential_revoked)
            self.context.services.credentials.release(viewer)

    # -- what the protocol and the execution layers provide -------------------------

    def _operation_tasks(self) -> Iterable[asyncio.Future[Any]]:
        raise NotImplementedError

    def _runs_shared_stream(self, task: asyncio.Future[Any]) -> bool:
        """Whether the operation's task (or the future standing for it) relays a
        stream that is the same for everyone (grouped execution knows; otherwise every
        operation counts as private)."""
        return False

    async def _close_after_sent(self, code: int, reason: str) -> None:
        """Close behind the frames already queued for the socket."""
        await self.websocket.close(code, reason)


# -- protections of both protocols ---------------------------------------------------


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
        """Strawberry's `handle`, in this frame (a frame less per socket), and holding
        no message while the socket waits for the next one: an idle subscriber would
        keep its subscribe message (the document, decoded) for its lifetime."""
        if not await self._claim_pending():
            return
        try:
            self.on_request_accepted()
            try:
                try:
                    async for message in self.websocket.iter_json():
                        await self.handle_message(message)
                        del message
                except NonTextMessageReceived:
                    await self.handle_invalid_message("WebSocket message type must be text")
                except NonJsonMessageReceived:
                    await self.handle_invalid_message("WebSocket message must be valid JSON")
            except WebSocketDisconnected:
                pass
            finally:
                await self.shutdown()
        finally:
            if self._keep_alive is not None:
                self._keep_alive.discard(self)
            self._release_slot()

    def _operation_tasks(self) -> list[asyncio.Future[Any]]:
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
        if self.connection_init_received:
            # Strawberry cancelled its init timeout, but keeps the task (and its
            # coroutine) referenced for the socket's lifetime: ~1 KB per idle socket.
            # The cancelled task finishes by itself; shutdown has nothing to stop.
            self.connection_init_timeout_task = None
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

    def _operation_tasks(self) -> list[asyncio.Future[Any]]:
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
        elif self.connection_acknowledged and self._init_timeout is not None:
            self._init_timeout.cancel()  # its job is done: no task per idle socket

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


# -- grouped subscription execution --------------------------------------------------


def _text_sender(
    ws: WebSocket,
) -> tuple[Callable[[str], Coroutine[Any, Any, None]], Callable[[str], bool] | None]:
    """`ws.send_text` with Starlette's state bookkeeping for text frames inlined (a
    frame after the close raises; a peer gone marks the socket disconnected), handing
    the frame straight to the connection's TrackedWebSocket (lifecycle.py) when
    there is one: three coroutines less per frame of the fan-out. (The outbox only
    needs a write to fail, whatever the exception.)

    And, with a TrackedWebSocket, a write that completes at once or declines
    (`Outbox`'s `write_now`: TrackedWebSocket.write_text, which declines wherever
    Starlette's state is past connected); otherwise None."""
    if not isinstance(ws, WebSocket):  # another adapter's socket
        return ws.send_text, None  # type: ignore[return-value]
    connected = WebSocketState.CONNECTED
    tracked: TrackedWebSocket | None = ws.scope.get(TRACKED_SOCKET)
    if tracked is not None:
        send_frame = tracked.send_text
        # As Starlette: once the peer is gone, the socket is done.
        tracked.on_lost = functools.partial(
            setattr, ws, "application_state", WebSocketState.DISCONNECTED
        )

        def send_text(text: str) -> Coroutine[Any, Any, None]:
            # Not a coroutine of its own: the check runs at the call, the write is
            # the tracked socket's coroutine.
            if ws.application_state is not connected:
                raise WebSocketDisconnect(1006)
            return send_frame(text)

        # The tracked socket's own method, not a closure checking Starlette's state
        # too (~330 B more per socket, tracemalloc): wherever that state is past
        # connected, the tracked socket declines as well (closed, or its turn taken
        # by the close; the peer gone or the connection closing; not accepted;
        # answered with a response), and send_text then raises.
        return send_text, tracked.write_text
    send = ws._send

    async def send_message_text(text: str) -> None:
        if ws.application_state is not connected:
            raise WebSocketDisconnect(1006)
        try:
            await send({"type": "websocket.send", "text": text})
        except OSError:  # as Starlette: the peer is gone, the socket is done
            ws.application_state = WebSocketState.DISCONNECTED
            raise WebSocketDisconnect(1006) from None

    return send_message_text, None


class _Grouped:
    """What both protocol handlers share: the groups and the connection's outbox."""

    view: Any
    websocket: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        groups: SubscriptionGroups | None = getattr(self.view, "subscription_groups", None)
        self.groups = groups
        self.outbox: Outbox | None = None
        if groups is not None:
            send_text, write_now = _text_sender(self.websocket.ws)
            self.outbox = Outbox(send_text, self.websocket.close, groups.send_queue, write_now)
        # Operation tasks relaying a shared (public) stream: a revoked credential
        # does not end them early (TrustedSocket). A list (at most
        # WS_MAX_SUBSCRIPTIONS), made with the first: a set is 216 B per socket.
        self._shared_tasks: list[asyncio.Future[Any]] | None = None

    async def send_message(self, message: Any) -> None:
        if self.outbox is None:
            await super().send_message(message)  # type: ignore[misc]
            return
        self.outbox.push(orjson.dumps(message).decode())

    def _runs_shared_stream(self, task: asyncio.Future[Any]) -> bool:
        return self._shared_tasks is not None and task in self._shared_tasks

    async def _close_after_sent(self, code: int, reason: str) -> None:
        if self.outbox is None:
            await super()._close_after_sent(code, reason)  # type: ignore[misc]
            return
        self.outbox.close_after_sent(code, reason)

    async def _relay(self, groups: SubscriptionGroups, member: Member, shared: bool) -> None:
        """Until the member's group ends (or the operation is stopped)."""
        task = asyncio.current_task()
        if shared and task is not None:
            if self._shared_tasks is None:
                self._shared_tasks = []
            self._shared_tasks.append(task)
        try:
            await member.wait()
        finally:
            groups.leave(member)
            if task is not None and self._shared_tasks is not None and task in self._shared_tasks:
                self._shared_tasks.remove(task)


class _MemberEnded:
    """The callback of a subscription's member ending (GroupedTransportWSHandler._over):
    ~64 B per subscription, where a closure costs ~260 B and a partial ~220 B."""

    __slots__ = ("handler", "member", "operation")

    def __init__(
        self, handler: GroupedTransportWSHandler, operation: Operation[Any, Any], member: Member
    ) -> None:
        self.handler = handler
        self.operation = operation
        self.member = member

    def __call__(self, future: asyncio.Future[None]) -> None:
        self.handler._over(self.operation, self.member, future)


class GroupedTransportWSHandler(_Grouped, BaseGraphQLTransportWSHandler[Any, Any]):
    """graphql-transport-ws. A subscription that joined its group keeps no task: its
    operation task ends once it joined (with it the task's frames and its context),
    and the member's `ended` future stands for it where Strawberry and the
    protections use `operation.task`."""

    def _follow(
        self,
        operation: Operation[Any, Any],
        member: Member,
        shared: bool,
        context: contextvars.Context,
    ) -> None:
        """What the operation's task did while it waited for the group, from callbacks:
        `complete` from the client (and shutdown) cancels `operation.task`, i.e. the
        member's `ended` future, and the member leaves its group without a `complete`;
        the group's end (its final frames already queued) leaves the group and sends
        `complete`. Shutdown awaits `operation.task`, and a revoked credential waits
        for the private ones, as they did for the task."""
        ended = member.ended
        operation.task = ended  # type: ignore[assignment]
        if shared:
            if self._shared_tasks is None:
                self._shared_tasks = []
            self._shared_tasks.append(ended)

        ended.add_done_callback(_MemberEnded(self, operation, member), context=context)

    def _over(
        self, operation: Operation[Any, Any], member: Member, future: asyncio.Future[None]
    ) -> None:
        """The subscription's member ended (`_follow`)."""
        assert self.groups is not None and self.outbox is not None
        self.groups.leave(member)
        if self._shared_tasks is not None and future in self._shared_tasks:
            self._shared_tasks.remove(future)
        # Not after a cancel (the client's `complete`, shutdown), nor when the client
        # completed the operation between the end and this callback (its `complete`
        # found the future already done): as a task would not have.
        if future.cancelled() or self.operations.get(operation.id) is not operation:
            return
        if not operation.completed:
            # Operation.send_operation_message for `complete`, without a task.
            operation.completed = True
            del self.operations[operation.id]
            self.outbox.push(orjson.dumps({"id": operation.id, "type": "complete"}).decode())

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        groups, outbox = self.groups, self.outbox
        if groups is None or outbox is None:
            await super().run_operation(operation)
            return
        # What the operation's end runs in, as its task would (the request id and user
        # of the socket), without what preparing it set: the callbacks keep it alive.
        context = contextvars.copy_context()
        try:
            outcome = await groups.prepare(
                operation.query,
                operation.variables,
                operation.operation_name,
                self.context,
                outbox,
            )
            if outcome is NOT_A_SUBSCRIPTION:
                await super().run_operation(operation)
                return
            if isinstance(outcome, Rejected):
                await self._handle_pre_execution_error(operation, outcome.result)  # type: ignore[arg-type]
                return
            if isinstance(outcome, Prepared):
                member = groups.join(outcome, outbox, operation.id, TRANSPORT_WS)
                self._follow(operation, member, outcome.policy.shared, context)
                return  # this task ends: the subscription goes on without one
            if isinstance(outcome, Failed):
                await operation.send_next(outcome.result)
            await operation.send_operation_message({"id": operation.id, "type": "complete"})
        except _OperationStreamClosed:
            return
        except Exception as error:
            # As Strawberry: log, end the operation for the client, re-raise.
            await self.handle_task_exception(error)
            await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise


class GroupedLegacyWSHandler(_Grouped, BaseGraphQLWSHandler[Any, Any]):
    """graphql-ws (the legacy subscriptions-transport-ws protocol)."""

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        groups, outbox = self.groups, self.outbox
        try:
            if groups is None or outbox is None:
                await self._stream_results(operation_id, query, operation_name, variables)
                return
            outcome = await groups.prepare(query, variables, operation_name, self.context, outbox)
            if outcome is NOT_A_SUBSCRIPTION:
                await self._stream_results(operation_id, query, operation_name, variables)
                return
            if isinstance(outcome, Rejected):
                assert outcome.result.errors
                error = outcome.result.errors[0].formatted
                await self.send_message({"type": "error", "id": operation_id, "payload": error})
                return
            if isinstance(outcome, Failed):
                await self.send_data_message(outcome.result, operation_id)
            elif isinstance(outcome, Prepared):
                member = groups.join(outcome, outbox, operation_id, LEGACY_WS)
                shared = outcome.policy.shared
                del outcome  # as over graphql-transport-ws
                await self._relay(groups, member, shared)
            await self.send_message({"type": "complete", "id": operation_id})
        except asyncio.CancelledError:
            # `stop` (or the connection closing): the protocol confirms with complete.
            await self.send_message({"type": "complete", "id": operation_id})
        finally:
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)

    async def _stream_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        """Any operation, run by Strawberry as over graphql-transport-ws (extensions,
        cost, permissions): a query or mutation gives one `data`, a subscription one
        per event; then `complete`. A request error is one `error`, without
        `complete`, as the protocol has it."""
        results = await self.schema.stream(
            query,
            variable_values=variables,
            context_value=self.context,
            root_value=self.root_value,
            operation_name=operation_name,
        )
        async with aclosing(results):
            first = True
            async for result in results:
                if first and isinstance(result, PreExecutionError):
                    assert result.errors
                    payload = result.errors[0].formatted
                    await self.send_message(
                        {"type": "error", "id": operation_id, "payload": payload}
                    )
                    return
                # The schema does not enable @defer/@stream: only whole results.
                assert isinstance(result, ExecutionResult)
                await self.send_data_message(result, operation_id)
                first = False
        await self.send_message({"type": "complete", "id": operation_id})


# -- the view's side --------------------------------------------------------------------


class AppTransportWSHandler(GroupedTransportWSHandler, TransportWSHandler):
    """graphql-transport-ws: the protections, then grouped execution."""


class AppLegacyWSHandler(GroupedLegacyWSHandler, LegacyWSHandler):
    """graphql-ws (legacy): the protections, then grouped execution."""


class WebSocketTransport:
    """Mixin for the GraphQL view (before Strawberry's view in its bases): the
    protocol handlers, the size-limited adapter, the sockets awaiting
    connection_init, the subscription groups, and the credential check at
    connection_init. The view calls `_init_websocket(settings)` in its __init__."""

    # Protections and grouped subscription execution (README "Protecting the API",
    # "Subscriptions at scale"), beneath Strawberry's protocol handlers.
    graphql_transport_ws_handler_class = AppTransportWSHandler
    graphql_ws_handler_class = AppLegacyWSHandler
    websocket_adapter_class = LimitedWebSocketAdapter

    schema: Any

    @staticmethod
    def websocket_options(settings: Settings) -> dict[str, Any]:
        """Strawberry's view arguments for WebSocket."""
        return {
            "keep_alive": True,  # graphql-ws (legacy) `ka` messages
            "keep_alive_interval": settings.ws_ping_interval_seconds,
            "connection_init_wait_timeout": timedelta(seconds=settings.ws_init_timeout_seconds),
            "max_subscriptions_per_connection": settings.ws_max_subscriptions,
            # Browsers' WebSocket handshakes are checked against the CORS allow-list;
            # same-origin pages and clients sending no Origin are let through.
            "allowed_origins": settings.cors_origins,
        }

    # Strawberry's view: the methods `_serve_websocket` calls as its `run` does.
    _check_websocket_origin: Callable[[WebSocket], bool]
    reject_websocket: Callable[[WebSocket], Awaitable[Any]]
    get_root_value: Callable[[WebSocket], Awaitable[Any]]
    pick_websocket_subprotocol: Callable[[WebSocket], Awaitable[str | None]]
    create_websocket_response: Callable[[WebSocket, str | None], Awaitable[WebSocket]]
    get_context: Callable[..., Awaitable[Context]]
    connection_init_wait_timeout: timedelta
    max_subscriptions_per_connection: int | None
    keep_alive: bool
    keep_alive_interval: float | None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        """A WebSocket goes straight to `_serve_websocket`, anything else on to the
        HTTP view. Not a coroutine, so that neither pays a frame of this layer."""
        if scope["type"] == "websocket":
            return self._serve_websocket(WebSocket(scope, receive=receive, send=send))
        return super().__call__(scope, receive, send)  # type: ignore[misc,no-any-return]

    async def _serve_websocket(self, request: WebSocket) -> None:
        """What Strawberry's ASGI view does with a WebSocket (its `__call__`, then the
        WebSocket branch of `run`), in one small frame instead of four: the frames of
        the chain that reaches a socket's handler live as long as the socket (the HTTP
        view's `__call__` and `run` only pass a WebSocket on), and the setup's frame
        ends before the handler runs. `tests/test_websocket_idle.py` pins Strawberry's
        `run` it follows."""
        handler = await self._websocket_handler(request)
        if handler is not None:
            await handler.handle()

    async def _websocket_handler(self, request: WebSocket) -> Any:
        """The socket's protocol handler, or None when the socket was refused. Same
        order of hooks as Strawberry's `run`: the origin check first, the root value,
        the subprotocol, the accept, the context, then the protocol's handler (4406
        for an unknown subprotocol)."""
        if not self._check_websocket_origin(request):
            await self.reject_websocket(request)
            return None
        root_value = await self.get_root_value(request)
        subprotocol = await self.pick_websocket_subprotocol(request)
        response = await self.create_websocket_response(request, subprotocol)
        websocket = self.websocket_adapter_class(self, request, response)  # type: ignore[arg-type]
        context = await self.get_context(request, response=response)
        if subprotocol == GRAPHQL_TRANSPORT_WS_PROTOCOL:
            return self.graphql_transport_ws_handler_class(
                view=self,
                websocket=websocket,
                context=context,
                root_value=root_value,
                schema=self.schema,
                connection_init_wait_timeout=self.connection_init_wait_timeout,
                max_subscriptions_per_connection=self.max_subscriptions_per_connection,
            )
        if subprotocol == GRAPHQL_WS_PROTOCOL:
            return self.graphql_ws_handler_class(
                view=self,
                websocket=websocket,
                context=context,
                root_value=root_value,
                schema=self.schema,
                keep_alive=self.keep_alive,
                keep_alive_interval=self.keep_alive_interval,
                max_subscriptions_per_connection=self.max_subscriptions_per_connection,
            )
        await websocket.close(4406, "Subprotocol not acceptable")
        return None

    def _init_websocket(self, settings: Settings) -> None:
        # None in "naive" mode: Strawberry runs each subscriber's stream itself.
        self.subscription_groups = (
            SubscriptionGroups(self.schema, settings.subscription_send_queue)
            if settings.subscription_mode == "grouped"
            else None
        )
        # Sockets per client address not yet past connection_init.
        self.pending_sockets = PendingSockets(settings.ws_max_pending_per_ip)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        services = context.services
        # Taken before the store is read: a revocation announced while this socket
        # authenticates is not missed (security/credentials.py).
        mark = services.credentials.mark()
        try:
            viewer = await services.authenticator.authenticate(
                context.request, context.connection_params or {}
            )
        except Unauthenticated as exc:
            raise CredentialsRefused(exc) from None
        except Exception as exc:
            log.warning("websocket credentials could not be checked", exc_info=exc)
            raise CredentialsUnavailable from exc
        if viewer is not None:
            viewer = services.credentials.hold(viewer, services.authenticator.revalidate, mark)
            context.state["ws_credential"] = viewer
            user_id_var.set(viewer.user_id)
            try:
                viewer = viewer.current()  # revoked meanwhile
            except Unauthenticated as exc:
                raise CredentialsRefused(exc) from None
        context.viewer = viewer
        key = identity_key(context)
        if not services.limiter.acquire_connection(key):
            raise TooManyConnections(key)
        context.state["ws_slot"] = key
        return UNSET
