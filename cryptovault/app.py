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

from cryptovault import __version__
from cryptovault.config import Settings
from cryptovault.middleware import RequestIdMiddleware
from cryptovault.schema import build_schema
from cryptovault.schema.context import Context
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
        return Context(services=self._app.state.services, request=request, response=response)

    def encode_json(self, data: object) -> bytes:  # type: ignore[override]
        return orjson.dumps(data)


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
            await started.close()

    app = Starlette(
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
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
    graphql = GraphQLApp(
        app,
        graphql_ide=None if settings.is_production else "graphiql",
        allow_queries_via_get=True,
    )
    app.router.routes.extend(
        [
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
        ]
    )
    return app
