"""The app factory: builds the Starlette application, its routes and middleware, and
starts/stops the services in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from ipaddress import IPv4Network, IPv6Address, IPv6Network
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cryptovault import __version__
from cryptovault.config import Settings
from cryptovault.errors import DomainError
from cryptovault.lifecycle import WebSocketTracking
from cryptovault.logs import user_id_var
from cryptovault.middleware import (
    BodySizeLimitMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    error_response,
)
from cryptovault.observability.metrics import metrics_endpoint
from cryptovault.observability.sentry import flush_sentry, init_sentry, without_field_spans
from cryptovault.schema import build_schema
from cryptovault.schema.context import Context
from cryptovault.schema.errors import map_error
from cryptovault.services import Services, readiness, start_services
from cryptovault.web import WebApp
from cryptovault.websocket import WebSocketTransport

log = logging.getLogger(__name__)


GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"
# Headers a browser client may read from a cross-origin response.
EXPOSED_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Used",
]


def trusted_hosts(proxies: Iterable[IPv4Network | IPv6Network]) -> list[str]:
    """TRUSTED_PROXIES for uvicorn's proxy middleware: each IPv4 network also in its
    IPv4-mapped IPv6 form (`::ffff:10.0.0.0/120`), the way a dual-stack socket reports
    an IPv4 peer and some proxies write a hop (security/origin.py)."""
    hosts = []
    for network in proxies:
        hosts.append(str(network))
        if isinstance(network, IPv4Network):
            mapped = IPv6Address(f"::ffff:{network.network_address}")
            hosts.append(str(IPv6Network((mapped, 96 + network.prefixlen))))
    return hosts


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header (GraphQL over HTTP), or None
    when the client accepts neither JSON type (406)."""
    if not accept:
        return JSON
    types = set()
    for part in accept.split(","):
        media, *params = (x.strip() for x in part.split(";"))
        if any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        types.add(media.lower())
    if GRAPHQL_RESPONSE_JSON in types:
        return GRAPHQL_RESPONSE_JSON
    if types & {JSON, "application/*", "*/*"}:
        return JSON
    return None


def _check_operation(item: object) -> None:
    if not isinstance(item, dict):
        raise HTTPException(400, "Each GraphQL request must be a JSON object")
    for key, kinds in (
        ("query", (str, type(None))),
        ("operationName", (str, type(None))),
        ("variables", (dict, type(None))),
        ("extensions", (dict, type(None))),
    ):
        if not isinstance(item.get(key), kinds):
            raise HTTPException(400, f"The request's `{key}` has the wrong type")


class GraphQLApp(WebSocketTransport, GraphQL[Context, None]):  # type: ignore[misc]
    """Strawberry's ASGI view with our context, orjson encoding and the HTTP
    protections (README "Protecting the API"); the WebSocket transport is
    cryptovault/websocket.py."""

    def __init__(self, app: Starlette, settings: Settings) -> None:
        super().__init__(
            build_schema(settings.max_batch_operations),
            # Browser visits of /graphql get the self-hosted GraphiQL (cryptovault/web.py)
            # in every environment; where introspection is refused to anonymous
            # callers, the page asks for a sign-in or an API key first.
            graphql_ide="graphiql",
            allow_queries_via_get=True,
            **self.websocket_options(settings),
        )
        self._app = app
        self.settings = settings
        self._init_websocket(settings)
        self.web = WebApp(settings.web_dist_dir)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            async with asyncio.timeout(self.settings.request_timeout_seconds):
                response = await self.run(request)
        except HTTPException as exc:
            response = self._http_error(exc)
        except TimeoutError:
            error_id = uuid.uuid4().hex
            log.warning(
                "request timed out",
                extra={"error_id": error_id, "timeout_s": self.settings.request_timeout_seconds},
            )
            response = JSONResponse(
                {
                    "errors": [
                        {
                            "message": "The operation did not finish within "
                            f"{self.settings.request_timeout_seconds:g} s and was stopped",
                            "extensions": {"code": "INTERNAL_SERVER_ERROR", "errorId": error_id},
                        }
                    ]
                },
                status_code=504,
            )
        await response(scope, receive, send)

    @staticmethod
    def _http_error(exc: HTTPException) -> Response:
        code = "NOT_FOUND" if exc.status_code == 404 else "BAD_USER_INPUT"
        headers = {"Allow": "POST"} if exc.status_code == 405 else None
        return error_response(exc.status_code, exc.reason, code, headers)

    async def run(
        self, request: Request | WebSocket, context: Any = UNSET, root_value: Any = UNSET
    ) -> Any:  # type: ignore[override]
        if isinstance(request, Request) and request.method == "POST":
            content_type = request.headers.get("content-type", "")
            mime = content_type.split(";", 1)[0].strip().lower()
            if mime != JSON:
                # Form and text/plain bodies are what a cross-site form can send
                # without a CORS preflight: refusing them closes that CSRF door.
                raise HTTPException(415, "POST bodies must be application/json")
        return await super().run(request, context, root_value)

    def should_render_graphql_ide(self, request: Any) -> bool:  # type: ignore[override]
        # An APQ GET carries only `extensions`: it is an operation, not a page visit.
        return super().should_render_graphql_ide(request) and (
            request.query_params.get("extensions") is None
        )

    async def render_graphql_ide(self, request: Request) -> Response:  # type: ignore[override]
        return self.web.graphiql(request)

    async def get_sub_response(self, request: Request) -> Response:  # type: ignore[override]
        sub_response = await super().get_sub_response(request)
        media = negotiate(request.headers.get("accept"))
        if media is None:
            if request.method == "GET" and "query" not in request.query_params:
                media = JSON  # a page visit: GraphiQL
            else:
                raise HTTPException(
                    406, f"Accept {GRAPHQL_RESPONSE_JSON} or {JSON} to receive GraphQL responses"
                )
        sub_response.media_type = media
        return sub_response

    def parse_json(self, data: str | bytes) -> Any:  # type: ignore[override]
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise HTTPException(400, "Unable to parse request body as JSON") from None
        return parsed

    async def parse_http_body(self, request: Any) -> Any:  # type: ignore[override]
        if request.method == "POST":
            parsed = self.parse_json(await request.get_body())
            if isinstance(parsed, list):
                if not self.schema.config.batching_config:
                    raise HTTPException(400, "Batched (array) requests are not accepted")
                for item in parsed:
                    _check_operation(item)
            else:
                _check_operation(parsed)
        return await super().parse_http_body(request)

    async def get_context(  # type: ignore[override]
        self, request: Request | WebSocket, response: Response | None = None
    ) -> Context:
        services: Services = self._app.state.services
        # HTTP: credentials from headers. WebSocket: from the connection_init payload,
        # checked in on_ws_connect (websocket.py) (the context is built before that message arrives).
        viewer = None
        refused: DomainError | None = None
        if isinstance(request, Request):
            try:
                viewer = await services.authenticator.authenticate(request)
            except DomainError as exc:
                # Public fields still answer; fields that need a viewer raise it.
                refused = exc
            if viewer is not None:
                user_id_var.set(viewer.user_id)
        return Context(
            services=services,
            request=request,
            response=response,  # type: ignore[arg-type]
            viewer=viewer,
            auth_error=refused,
        )

    async def execute_single(  # type: ignore[override]
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: Any,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        try:
            query = await context.services.persisted_queries.resolve(
                request_data.query, request_data.extensions
            )
        except DomainError as exc:
            error = GraphQLError(exc.message, extensions={"code": exc.code, **exc.extensions})
            return PreExecutionError(data=None, errors=[error])
        # Subscriptions are served over WebSocket only; GET carries queries only.
        allowed = {OperationType.QUERY}
        if request_adapter.method == "POST":
            allowed.add(OperationType.MUTATION)
        try:
            return await self.schema.execute(
                query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except InvalidOperationTypeError as exc:
            if request_adapter.method == "GET":
                raise HTTPException(
                    405, "Only queries may be sent with GET: send mutations with POST"
                ) from exc
            raise HTTPException(400, "Subscriptions are served over WebSocket only") from exc
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from exc
        except MissingQueryError as exc:
            raise HTTPException(400, "No GraphQL query found in the request") from exc

    def encode_json(self, data: object) -> str:
        # A str, not bytes: WebSocket protocols require text frames.
        return orjson.dumps(data).decode()

    async def process_result(  # type: ignore[override]
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        # Errors raised while parsing with the parser cache bypass the schema
        # extensions; map them here too (mapping an already mapped error is a no-op).
        if result.errors:
            result.errors = [map_error(e) for e in result.errors]
        response = process_result(result)
        if isinstance(result, PreExecutionError):
            # GraphQL over HTTP: a request error (nothing executed) has no `data`.
            response.pop("data", None)
        return response

    def create_response(  # type: ignore[override]
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media = sub_response.media_type or JSON
        items = response_data if isinstance(response_data, list) else [response_data]
        errors: list[dict[str, Any]] = [
            e  # type: ignore[misc]
            for item in items
            for e in item.get("errors") or ()
        ]
        limited = [e for e in errors if (e.get("extensions") or {}).get("code") == "RATE_LIMITED"]
        status = 200
        if limited:
            status = 429
            if "retry-after" not in sub_response.headers:
                retry = max(
                    int((e.get("extensions") or {}).get("retryAfter") or 1) for e in limited
                )
                sub_response.headers["Retry-After"] = str(retry)
        elif (
            media == GRAPHQL_RESPONSE_JSON
            and not isinstance(response_data, list)
            and "data" not in response_data
        ):
            status = 400
        response = Response(self.encode_json(response_data), status_code=status, media_type=media)
        response.headers.raw.extend(
            (k, v) for k, v in sub_response.headers.raw if k != b"content-type"
        )
        if sub_response.background:
            response.background = sub_response.background
        if sub_response.status_code:
            response.status_code = sub_response.status_code
        return response


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


async def ready(request: Request) -> Response:
    checks = await readiness(request.app.state.services)
    failing = [name for name, state in checks.items() if state != "ok"]
    body: dict[str, object] = {"status": "ok" if failing == [] else "unavailable", "checks": checks}
    if failing:
        body["failing"] = failing
    return JSONResponse(body, status_code=503 if failing else 200)


def create_app(settings: Settings, services: Services | None = None) -> Starlette:
    """Build the app. Pass `services` to share already-started services (tests);
    otherwise the lifespan starts them from `settings` and closes them on shutdown."""
    # Before the schema is built: Sentry's Strawberry integration hooks its creation.
    init_sentry(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        started = await start_services(settings)
        app.state.services = started
        if app.state.subscription_groups is not None:
            app.state.subscription_groups.metrics = started.metrics
        log.info(
            "cryptovault ready",
            extra={
                "environment": settings.environment,
                "store": "mongodb" if settings.mongodb_url else "embedded",
                "bus": "redis" if settings.redis_url else "memory",
                "feed": settings.market_feed,
            },
        )
        try:
            yield
        finally:
            # Under `cryptovault serve` the sockets are already closed with 1001
            # (lifecycle.GracefulServer); other servers get here with them open.
            await started.websockets.close_all(timeout=settings.shutdown_timeout_seconds)
            if app.state.subscription_groups is not None:
                await app.state.subscription_groups.close()  # before the hub they read
            await started.close()
            log.info("cryptovault stopped")
            flush_sentry()
            for handler in logging.getLogger().handlers:
                handler.flush()

    proxies = (
        # Outermost: everything after it sees the client behind the proxy. uvicorn's
        # middleware takes the right-most address of X-Forwarded-For that is not a
        # trusted proxy, so what a client writes on the left of it is ignored.
        [Middleware(ProxyHeadersMiddleware, trusted_hosts=trusted_hosts(settings.trusted_proxies))]
        if settings.trusted_proxies
        else []
    )
    app = Starlette(
        lifespan=lifespan,
        middleware=[
            *proxies,
            Middleware(RequestIdMiddleware),
            Middleware(SecurityHeadersMiddleware, production=settings.is_production),
            Middleware(WebSocketTracking),
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "X-API-Key",
                    "X-Request-ID",
                    "X-CSRF-Protection",
                ],
                expose_headers=EXPOSED_HEADERS,
                allow_credentials="*" not in settings.cors_origins,
            ),
            Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes),
        ],
    )
    if services is not None:
        app.state.services = services  # usable without running the lifespan (tests)
    graphql = GraphQLApp(app, settings)
    without_field_spans(graphql.schema)
    # The view's subscription groups, for metrics and tests.
    app.state.subscription_groups = graphql.subscription_groups
    if graphql.subscription_groups is not None and services is not None:
        graphql.subscription_groups.metrics = services.metrics
    app.router.routes.extend(
        [
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics_endpoint(settings.metrics_token), methods=["GET"]),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            # Last: the app's pages catch every other browser navigation.
            *graphql.web.routes(),
        ]
    )
    return app
