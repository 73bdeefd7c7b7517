"""The app's edge, as one pure-ASGI middleware (one pass per request instead of a
stack of layers): a request id on every request (taken from X-Request-ID or made up),
echoed in the response and bound to every log line; one access log line per HTTP
request (with the GraphQL operation names, and the user id when known) and its
Prometheus metrics; CORS; security headers; the request body size limit."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptovault.logs import request_id_var, user_id_var

if TYPE_CHECKING:
    from cryptovault.observability.metrics import Metrics

log = logging.getLogger("cryptovault.access")

_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # the whole id: fullmatch


# Request ids made 256 at a time from one os.urandom call (one getrandom system call
# per 256 requests instead of one per request), the version and variant bits of the
# whole batch set by two byte translations and its hex written at once; the ones not
# handed out yet, last first. Request ids are made on the event loop's thread only.
_ID_BYTES = 16
_ID_BATCH = 256
# Byte -> the byte with a version-4 UUID's version bits (byte 6), variant bits (byte 8).
_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))
_VARIANT = bytes(b & 0x3F | 0x80 for b in range(256))
_ids: list[str] = []


def new_request_id() -> str:
    """A request id as `uuid.uuid4().hex` writes one (32 hex digits, the version and
    variant bits of a random UUID), from the same random source, without a UUID;
    never one made before, nor one a forked process makes."""
    if not _ids:
        _ids.extend(_id_batch())
    return _ids.pop()


def _id_batch() -> list[str]:
    raw = bytearray(os.urandom(_ID_BYTES * _ID_BATCH))
    raw[6::_ID_BYTES] = raw[6::_ID_BYTES].translate(_VERSION_4)
    raw[8::_ID_BYTES] = raw[8::_ID_BYTES].translate(_VARIANT)
    text = raw.hex()
    width = 2 * _ID_BYTES
    return [text[start : start + width] for start in range(0, len(text), width)]


def _forget_random_ids() -> None:
    """In a forked child: its ids must not be the rest of its parent's batch."""
    _ids.clear()


os.register_at_fork(after_in_child=_forget_random_ids)


def _metrics(scope: Scope) -> Metrics | None:
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    return getattr(services, "metrics", None)


def error_response(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A GraphQL-shaped error for failures outside GraphQL execution."""
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
        headers=headers,
    )


# Strict for API responses: they are JSON, never rendered as a page. The GraphiQL page
# sets its own policy (cryptovault/web.py).
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), payment=(), usb=(), interest-cohort=()"
)
API_CSP_BYTES = API_CSP.encode()
_NO_STORE = (b"cache-control", b"no-store")
_VARY_ORIGIN = (b"vary", b"Origin")


class Answer:
    """An ASGI response of one body: what Starlette's Response sends for it. A direct
    route's handler returns one for the edge to send (with the edge's headers).
    `plain`: none of its headers is Vary or one the edge sets (security headers,
    Cache-Control, X-Request-ID), so the edge appends its own without looking."""

    __slots__ = ("body", "headers", "plain", "status_code")

    def __init__(
        self,
        status_code: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        plain: bool = False,
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body
        self.plain = plain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.headers}
        )
        await send({"type": "http.response.body", "body": self.body})


class DirectRoute:
    """One POST route the edge hands a request to itself, once it has read the body:
    what the layers between them (the WebSocket registry, Starlette's exception
    middleware, the router) do for such a request is setting the router and the
    route's scope keys, which `matches` does too. `handler(scope, receive, body)`
    answers it with the body already read: an ASGI response, which the edge sends.
    Set once the app is built; the route has no path parameters."""

    def __init__(self) -> None:
        self.route: Route | None = None
        self.router: Router | None = None
        self.handler: Callable[[Scope, Receive, bytes], Awaitable[ASGIApp]] | None = None

    def set(
        self,
        route: Route,
        router: Router,
        handler: Callable[[Scope, Receive, bytes], Awaitable[ASGIApp]],
    ) -> None:
        assert not route.param_convertors, "a direct route has no path parameters"
        self.route, self.router, self.handler = route, router, handler

    def matches(self, scope: Scope) -> bool:
        """Whether this route serves `scope` (as the router would find it: first)."""
        route = self.route
        if route is None or scope.get("root_path") or scope["path"] != route.path:
            return False
        if route.methods and scope["method"] not in route.methods:
            return False
        # The scope keys Router.app and Route.matches set for a route without
        # parameters. Sentry (and OpenTelemetry) name a request by scope["route"].
        scope.setdefault("router", self.router)
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = dict(scope.get("path_params", {}))
        return True


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for an app behind the edge: the body the edge read, then what comes."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _Exchange:
    """One HTTP request at the edge: the status it was answered with (0: none yet)
    and `send`, through which the app behind the edge answers (CORS, the security
    headers, the request id added)."""

    __slots__ = ("edge", "origin", "preflight", "request_id", "scope", "status", "upstream")

    def __init__(
        self,
        edge: EdgeMiddleware,
        scope: Scope,
        upstream: Send,
        origin: str | None,
        request_id: bytes,
        preflight: bool,
    ) -> None:
        self.edge = edge
        self.scope = scope
        self.upstream = upstream
        self.origin = origin
        self.request_id = request_id
        self.preflight = preflight
        self.status = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            edge = self.edge
            if not self.preflight:
                edge._cors(message, self.origin, self.scope)
            headers = edge._secure(
                list(message.get("headers", [])), (b"x-request-id", self.request_id)
            )
            message = {**message, "headers": headers}
        await self.upstream(message)


class EdgeMiddleware:
    """Request id, access log and HTTP metrics, CORS (Starlette's CORSMiddleware
    rules, `cors`), security headers (a response may set its own CSP) and the body
    size limit: bodies over `max_body_bytes` are refused with 413 before the app reads
    them (the body is buffered, at most `max_body_bytes`, and replayed to the app).

    Response headers come in the order the layers this replaces added them: the
    app's, CORS's, the security headers, X-Request-ID.

        Middleware(EdgeMiddleware, production=True, max_body_bytes=1 << 20,
                   cors=dict(allow_origins=["https://app.example"], ...))
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        production: bool,
        max_body_bytes: int,
        cors: dict[str, Any],
        direct: DirectRoute | None = None,
        write_whole: Callable[[Send, int, list[tuple[bytes, bytes]], bytes], bool] | None = None,
    ) -> None:
        self.app = app
        self.direct = direct
        # Writes a direct route's plain answer in one piece where the server's
        # connection takes it (http/whole_response.py); False: send it as messages.
        self.write_whole = write_whole
        # Starlette's server-error layer, when it was moved inside the edge
        # (`outside_errors`): the edge answers a failure of its direct route as it would.
        self.errors: ServerErrorMiddleware | None = None
        self.max_body_bytes = max_body_bytes
        self.cors = CORSMiddleware(app, **cors)
        headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"permissions-policy", PERMISSIONS_POLICY.encode()),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if production:
            headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
        self.security_headers = headers
        # All of them, when a response sets none of their names (the usual case).
        self._tail = [*headers, (b"content-security-policy", API_CSP_BYTES), _NO_STORE]
        self._tail_names = frozenset(name for name, _ in self._tail)
        # What a plain Answer gets without an Origin (CORS's Vary, then the tail).
        self._plain_tail = [_VARY_ORIGIN, *self._tail]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        incoming = ""
        origin: str | None = None
        preflight = False
        declared = -1
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                if not incoming:
                    incoming = value.decode("latin-1")
            elif name == b"origin":
                if origin is None:
                    origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                preflight = True
            elif name == b"content-length":
                # Not contextlib.suppress: a context manager per request.
                try:  # noqa: SIM105
                    declared = max(declared, int(value))
                except ValueError:
                    pass
        # Only accept well-formed ids: they end up in logs and headers. (`match` with
        # a `$` would take "id\n": `$` also matches before a final newline.)
        request_id = incoming if incoming and _VALID_ID.fullmatch(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        user_token = user_id_var.set(None)
        if kind == "websocket":
            # Frames pass straight through: a wrapper would cost every frame of every
            # subscription, for headers only HTTP responses carry.
            try:
                await self.app(scope, receive, send)
            finally:
                request_id_var.reset(token)
                user_id_var.reset(user_token)
            return
        start = time.perf_counter()
        method = scope["method"]
        # A CORS preflight is answered here, without the CORS headers of a response.
        answer_preflight = origin is not None and method == "OPTIONS" and preflight
        exchange = _Exchange(self, scope, send, origin, request_id.encode(), answer_preflight)
        try:
            if answer_preflight:
                response = self.cors.preflight_response(request_headers=Headers(scope=scope))
                await response(scope, receive, exchange.send)
            elif method in ("GET", "HEAD", "OPTIONS"):
                await self.app(scope, receive, exchange.send)
            else:
                try:
                    answer = await self._limited(scope, receive, exchange, declared)
                except Exception as exc:
                    if exchange.status == 0:  # nothing answered yet: the direct route failed
                        await self._server_error(scope, receive, exchange.send, exc)
                    raise
                if answer is not None and answer.plain and origin is None:
                    # A direct route's plain answer: what exchange.send comes to for
                    # it (CORS's Vary, the security headers, the request id).
                    headers = answer.headers
                    headers += self._plain_tail
                    headers.append((b"x-request-id", exchange.request_id))
                    exchange.status = answer.status_code
                    write_whole = self.write_whole
                    if write_whole is None or not write_whole(
                        send, answer.status_code, headers, answer.body
                    ):
                        await send(
                            {
                                "type": "http.response.start",
                                "status": answer.status_code,
                                "headers": headers,
                            }
                        )
                        await send({"type": "http.response.body", "body": answer.body})
                elif answer is not None:
                    await answer(scope, receive, exchange.send)
        finally:
            seconds = time.perf_counter() - start
            status = exchange.status
            if log.isEnabledFor(logging.INFO):
                fields: dict[str, object] = {
                    "method": method,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                }
                # Left by the OperationMetrics schema extension (several in a batch).
                operations = scope["state"].get("graphql_operations")
                if operations:
                    fields["operation"] = ",".join(name for name, _ in operations)
                    fields["operation_type"] = ",".join(kind for _, kind in operations)
                log.info("request", extra=fields)
            metrics = _metrics(scope)
            if metrics is not None:
                metrics.observe_http(method, scope["path"], status, seconds)
            request_id_var.reset(token)
            user_id_var.reset(user_token)

    @staticmethod
    def outside_errors(stack: ASGIApp) -> ASGIApp:
        """Starlette's middleware `stack` (its ServerErrorMiddleware outermost, then the
        app's middleware, the edge among them) with that layer moved just inside the
        edge. A 500 then leaves through the edge (its security headers, request id,
        access log line and metrics with status 500), and the edge's direct route is
        not wrapped by it: the edge answers that route's failures itself, with the
        same layer's answer (`_server_error`)."""
        errors = stack
        assert isinstance(errors, ServerErrorMiddleware), errors
        top: Any = errors.app
        above: Any = None
        edge: Any = top
        while not isinstance(edge, EdgeMiddleware):
            above, edge = edge, edge.app
        errors.app, edge.app, edge.errors = edge.app, errors, errors
        if above is None:
            return edge  # type: ignore[no-any-return]
        above.app = edge
        return top  # type: ignore[no-any-return]

    async def _server_error(
        self, scope: Scope, receive: Receive, send: Send, exc: Exception
    ) -> None:
        """Answer `exc`, which nothing answered yet, as Starlette's ServerErrorMiddleware
        does (its 500, its debug page or the app's 500 handler), through `send`."""
        if self.errors is None:
            return  # the layer is outside the edge: it answers

        async def failed(scope: Scope, receive: Receive, send: Send) -> None:
            raise exc

        answering = ServerErrorMiddleware(failed, self.errors.handler, self.errors.debug)
        try:
            await answering(scope, receive, send)
        except Exception as again:
            if again is not exc:  # it raises `exc` once answered; anything else is new
                raise

    def _secure(
        self, headers: list[tuple[bytes, bytes]], request_id_header: tuple[bytes, bytes]
    ) -> list[tuple[bytes, bytes]]:
        """`headers` (a list of the caller's) with the security headers the response
        did not set itself, then the request id."""
        present = {name.lower() for name, _ in headers}
        if present.isdisjoint(self._tail_names):
            headers += self._tail
        else:
            headers.extend(h for h in self.security_headers if h[0] not in present)
            if b"content-security-policy" not in present:
                headers.append((b"content-security-policy", API_CSP_BYTES))
            if b"cache-control" not in present:
                # Responses carry private data (balances, orders): never cache them.
                headers.append(_NO_STORE)
        headers.append(request_id_header)
        return headers

    def _cors(self, message: Message, origin: str | None, scope: Scope) -> None:
        """What Starlette's CORSMiddleware adds to a response (its `send`)."""
        message.setdefault("headers", [])
        raw = message["headers"]
        if origin is None and all(k != b"vary" for k, _ in raw):
            # What the general case below comes to (on a copy: a response may be sent
            # more than once).
            message["headers"] = [*raw, _VARY_ORIGIN]
            return
        headers = MutableHeaders(scope=message)
        cors = self.cors
        if origin is not None:
            headers.update(cors.simple_headers)
        if (origin is not None and cors.allow_all_origins and cors.allow_credentials) or (
            origin is not None and not cors.allow_all_origins and cors.is_allowed_origin(origin)
        ):
            cors.allow_explicit_origin(headers, origin)
        else:
            headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])

    async def _limited(
        self, scope: Scope, receive: Receive, exchange: _Exchange, declared: int
    ) -> Answer | None:
        """Reads the body (refused past the limit) and serves the request: a direct
        route's `Answer` is returned for the caller to send, anything else is sent."""
        send = exchange.send
        if declared > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        direct = self.direct
        if direct is not None and direct.handler is not None and direct.matches(scope):
            response = await direct.handler(scope, receive, body)
            if type(response) is Answer:
                return response
            await response(scope, receive, send)
            return None
        await self.app(scope, _replaying(body, receive), send)
        return None

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, f"The request body exceeds {self.max_body_bytes} bytes", "BAD_USER_INPUT"
        )
        await response(scope, receive, send)
