"""The app factory: builds the Starlette application, its routes and middleware, and
starts/stops the services in the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from cryptovault import __version__
from cryptovault.config import Settings
from cryptovault.errors import DomainError
from cryptovault.lifecycle import WebSocketTracking
from cryptovault.logs import user_id_var
from cryptovault.middleware import RequestIdMiddleware
from cryptovault.observability.metrics import metrics_endpoint
from cryptovault.observability.sentry import flush_sentry, init_sentry, without_field_spans
from cryptovault.schema import build_schema
from cryptovault.schema.context import Context
from cryptovault.schema.errors import map_error
from cryptovault.services import Services, readiness, start_services

log = logging.getLogger(__name__)


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context and orjson encoding."""

    def __init__(self, app: Starlette, **kwargs: Any) -> None:
        super().__init__(build_schema(), **kwargs)
        self._app = app

    async def get_context(  # type: ignore[override]
        self, request: Request | WebSocket, response: Response | None = None
    ) -> Context:
        services: Services = self._app.state.services
        # HTTP: credentials from headers. WebSocket: from the connection_init payload,
        # checked in on_ws_connect (the context is built before that message arrives).
        viewer = None
        if isinstance(request, Request):
            viewer = await services.authenticator.authenticate(request)
            if viewer is not None:
                user_id_var.set(viewer.user_id)
        return Context(services=services, request=request, response=response, viewer=viewer)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:  # type: ignore[override]
        try:
            context.viewer = await context.services.authenticator.authenticate(
                context.request, context.connection_params or {}
            )
            if context.viewer is not None:
                user_id_var.set(context.viewer.user_id)
        except DomainError as exc:
            # Strawberry closes the socket with 4403.
            raise ConnectionRejectionError({"code": exc.code, "message": exc.message}) from None
        return UNSET

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
        return process_result(result)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


async def ready(request: Request) -> Response:
    checks = await readiness(request.app.state.services)
    failing = [name for name, state in checks.items() if state != "ok"]
    body = {"status": "ok" if not failing else "unavailable", "checks": checks}
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
            await started.close()
            log.info("cryptovault stopped")
            flush_sentry()
            for handler in logging.getLogger().handlers:
                handler.flush()

    app = Starlette(
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(WebSocketTracking),
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
                expose_headers=["X-Request-ID"],
                allow_credentials="*" not in settings.cors_origins,
            ),
        ],
    )
    if services is not None:
        app.state.services = services  # usable without running the lifespan (tests)
    graphql = GraphQLApp(
        app,
        graphql_ide=None if settings.is_production else "graphiql",
        allow_queries_via_get=True,
    )
    without_field_spans(graphql.schema)
    app.router.routes.extend(
        [
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics_endpoint(settings.metrics_token), methods=["GET"]),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
        ]
    )
    return app
