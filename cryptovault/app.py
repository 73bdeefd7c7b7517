"""The app factory: builds the Starlette application, its routes and middleware, and
starts/stops the services in the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from ipaddress import IPv4Network, IPv6Address, IPv6Network

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cryptovault import __version__
from cryptovault.config import Settings
from cryptovault.http.view import GraphQLView
from cryptovault.http.whole_response import write_whole
from cryptovault.lifecycle import WebSocketTracking
from cryptovault.middleware import DirectRoute, EdgeMiddleware
from cryptovault.observability.sentry import flush_sentry, init_sentry, without_field_spans
from cryptovault.schema import build_schema
from cryptovault.services import (
    Services,
    bounded_step,
    metrics_endpoint,
    readiness,
    start_services,
)
from cryptovault.web import WebApp
from cryptovault.websocket import WebSocketTransport

log = logging.getLogger(__name__)


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


class GraphQLApp(WebSocketTransport, GraphQLView):  # type: ignore[misc]
    """The GraphQL endpoint: the HTTP view (cryptovault/http/view.py) and the
    WebSocket transport (cryptovault/websocket.py) with their protections (README
    "Protecting the API", "Subscriptions at scale")."""

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


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


async def ready(request: Request) -> Response:
    checks = await readiness(request.app.state.services)
    failing = [name for name, state in checks.items() if state != "ok"]
    body: dict[str, object] = {"status": "ok" if failing == [] else "unavailable", "checks": checks}
    if failing:
        body["failing"] = failing
    return JSONResponse(body, status_code=503 if failing else 200)


class _App(Starlette):
    """Starlette, with its server-error layer inside the edge
    (EdgeMiddleware.outside_errors)."""

    def build_middleware_stack(self) -> ASGIApp:
        return EdgeMiddleware.outside_errors(super().build_middleware_stack())


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
                # Before the hub they read; bounded as the services' steps are.
                await bounded_step(
                    "subscriptions",
                    app.state.subscription_groups.close(),
                    settings.shutdown_timeout_seconds,
                )
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
    # POST /graphql, handed by the edge straight to the view once it read the body.
    direct = DirectRoute()
    app = _App(
        lifespan=lifespan,
        middleware=[
            *proxies,
            # Request id, access log, security headers, CORS and the body limit in
            # one pass (cryptovault/middleware.py).
            Middleware(
                EdgeMiddleware,
                production=settings.is_production,
                max_body_bytes=settings.max_body_bytes,
                cors={
                    "allow_origins": list(settings.cors_origins),
                    "allow_methods": ["GET", "POST", "OPTIONS"],
                    "allow_headers": [
                        "Authorization",
                        "Content-Type",
                        "X-API-Key",
                        "X-Request-ID",
                        "X-CSRF-Protection",
                    ],
                    "expose_headers": EXPOSED_HEADERS,
                    "allow_credentials": "*" not in settings.cors_origins,
                },
                direct=direct,
                write_whole=write_whole,
            ),
            Middleware(WebSocketTracking),
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
    graphql_route = Route("/graphql", graphql, methods=["GET", "POST"])
    app.router.routes.extend(
        [
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics_endpoint(settings.metrics_token), methods=["GET"]),
            graphql_route,
            WebSocketRoute("/graphql", graphql),
            # Last: the app's pages catch every other browser navigation.
            *graphql.web.routes(),
        ]
    )
    direct.set(graphql_route, app.router, graphql.respond)
    return app
