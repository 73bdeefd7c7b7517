"""Everything the app builds once at start-up and hands to requests: the store, the
event bus and hub, the market service and the feed leader, identity (accounts,
sessions, API keys, the authenticator, the credentials open sockets hold), the audit
log, protection (limits, persisted queries), admin, trading, watchlists, price alerts
and the portfolio, metrics, the WebSocket registry and the retention job."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from starlette.requests import Request
from starlette.responses import Response

from cryptovault.admin.privacy import Privacy
from cryptovault.admin.service import AdminService
from cryptovault.config import Settings
from cryptovault.db import Store, open_store
from cryptovault.events.bus import EventBus, MemoryBus, RedisBus
from cryptovault.events.counters import HourlyCounters
from cryptovault.events.hub import Hub
from cryptovault.events.lease import LocalLease, RedisLease
from cryptovault.lifecycle import WebSocketRegistry
from cryptovault.market.feeds import Feed, build_feed
from cryptovault.market.leader import FeedLeader
from cryptovault.market.service import MarketService
from cryptovault.observability.metrics import Metrics
from cryptovault.portfolio.alerts import PriceAlerts
from cryptovault.portfolio.service import PortfolioService
from cryptovault.portfolio.watchlists import Watchlists
from cryptovault.protection.limiter import Limiter
from cryptovault.protection.persisted import PersistedQueries
from cryptovault.retention import Retention
from cryptovault.security.apikeys import ApiKeys
from cryptovault.security.audit import AuditLog
from cryptovault.security.authcache import AuthCache
from cryptovault.security.authenticator import TokenAuthenticator
from cryptovault.security.credentials import LiveCredentials
from cryptovault.security.identity import IdentityService
from cryptovault.security.mailer import build_mailer
from cryptovault.security.viewer import Authenticator
from cryptovault.trading.engine import TradingEngine
from cryptovault.trading.liquidity import LiquidityBook, MemoryLiquidity, RedisLiquidity

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: Store
    redis: aioredis.Redis | None
    bus: EventBus
    hub: Hub
    market: MarketService
    leader: FeedLeader
    authenticator: Authenticator
    audit: AuditLog
    identity: IdentityService
    api_keys: ApiKeys
    # Cost budgets, auth attempt limits, WebSocket slots (README "Protecting the API").
    limiter: Limiter
    admin: AdminService
    trading: TradingEngine
    privacy: Privacy
    persisted_queries: PersistedQueries
    watchlists: Watchlists
    alerts: PriceAlerts
    portfolio: PortfolioService
    # The credentials this instance's WebSockets hold, kept current through the bus.
    credentials: LiveCredentials
    # Operations: Prometheus metrics, live WebSocket connections, data retention.
    metrics: Metrics = field(default_factory=Metrics)
    websockets: WebSocketRegistry = field(default_factory=WebSocketRegistry)
    retention: Retention | None = None

    async def close(self, timeout: float | None = None) -> None:
        """Stop everything, in order, within `timeout` seconds (by default
        SHUTDOWN_TIMEOUT_SECONDS): work in progress (fills, alert firings, candle
        writes, order audit copies) gets what is left of it. A step still running when
        its time is up is cancelled, logged, and not waited for (it may swallow the
        cancellation): shutdown goes on, and the connections (bus, Redis, store) are
        always closed, each within CONNECTION_CLOSE_SECONDS. An unreachable store or
        Redis cannot hold a worker's stop up (`serve --workers` would kill it after
        its bound and exit 3). One log line gives each step's duration."""
        loop = asyncio.get_running_loop()
        budget = self.settings.shutdown_timeout_seconds if timeout is None else timeout
        deadline = loop.time() + budget
        took: dict[str, float] = {}

        def left(cap: float = float("inf")) -> float:
            """What a step may take: the rest of the budget (at most `cap`, a
            component's own default), at least STEP_FLOOR_SECONDS."""
            return max(STEP_FLOOR_SECONDS, min(cap, deadline - loop.time()))

        async def step(
            name: str, work: Callable[[], Coroutine[Any, Any, object]], bound: float | None = None
        ) -> None:
            # A component's own timeout (`left(cap)`, given to it) fires first; this
            # bound, a little later, is for what ignores it.
            start = loop.time()
            await bounded_step(
                name, work(), left() + STEP_MARGIN_SECONDS if bound is None else bound
            )
            took[name] = round((loop.time() - start) * 1000, 1)

        try:
            if self.retention is not None:
                await step("retention", self.retention.close)
            # Reset mails get a quarter of the budget at most: a slow SMTP server must not
            # leave fills, the feed lease and pending candles only the floor.
            await step("identity", lambda: self.identity.drain(left(min(10.0, budget / 4))))
            await step("credentials", self.credentials.close)
            await step("trading", lambda: self.trading.close(left(5.0)))
            await step("leader", self.leader.close)
            await step("alerts", lambda: self.alerts.close(left(5.0)))
            await step("portfolio", lambda: self.portfolio.close(left(5.0)))
            await step("market", lambda: self.market.close(left(5.0)))
            # Security events still being retried get a last try while the bus is open.
            await step("audit", lambda: self.audit.flush(left(2.0)))
        finally:
            # Also when this close is itself cancelled: the connections are closed,
            # each within its bound.
            await step("bus", self.bus.close, CONNECTION_CLOSE_SECONDS)
            if self.redis is not None:
                redis = self.redis

                async def close_redis() -> None:
                    with contextlib.suppress(Exception):
                        await redis.aclose()

                await step("redis", close_redis, CONNECTION_CLOSE_SECONDS)
            # pymongo's own bound first (it then still closes its pools), ours after it.
            await step(
                "store",
                lambda: self.store.close(CONNECTION_CLOSE_SECONDS),
                CONNECTION_CLOSE_SECONDS + 1.0,
            )
            log.info("services closed", extra={"steps_ms": took})


# Services.close: the least time a step gets once the shutdown budget is spent (to
# cancel its tasks), the margin after a component's own timeout before the step is
# cancelled, and the bound of closing each connection.
STEP_FLOOR_SECONDS = 0.5
STEP_MARGIN_SECONDS = 0.5
CONNECTION_CLOSE_SECONDS = 2.0
# start_services failing halfway: the bound of stopping each part it started.
STARTED_CLOSE_SECONDS = 5.0


async def bounded_step(name: str, work: Coroutine[Any, Any, object], seconds: float) -> None:
    """Run one shutdown step for at most `seconds` (logged if it fails or overruns).
    In a task of its own: one that ignores its cancellation is left behind, not
    awaited; named `shutdown:<step>`, so a worker's `stacks` line shows what a stuck
    step awaits (the lifespan's own chain cannot be followed into its generator)."""
    task = asyncio.get_running_loop().create_task(work, name=f"shutdown:{name}")
    # Retrieved here, so a step that fails after it was left behind is not reported
    # as "never retrieved" at exit.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        # A moment to unwind (its finally blocks); not more.
        await asyncio.wait({task}, timeout=min(1.0, seconds))
        log.warning(
            "shutdown step did not finish in time: cancelled",
            extra={"step": name, "timeout_s": round(seconds, 2), "ended": task.done()},
        )
        return
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("shutdown step failed", extra={"step": name}, exc_info=error)


async def start_services(
    settings: Settings,
    feed: Feed | str | None = "auto",
    event_listeners: list[object] | None = None,
) -> Services:
    """Start everything. `feed` overrides the configured feed (tests pass None or
    their own); `event_listeners` are pymongo monitoring listeners."""
    metrics = Metrics(settings.environment)
    store = await open_store(
        settings.mongodb_url,
        settings.mongodb_db,
        settings.data_dir,
        event_listeners=[*(event_listeners or []), metrics.store_listener()],
    )
    redis = None
    # What has started running, to stop (newest first) if a later step fails.
    started: list[tuple[str, Callable[[], Coroutine[Any, Any, object]]]] = []
    try:
        if settings.migrate_on_start:
            await _migrate_on_start(store)
        if settings.redis_url:
            redis = aioredis.from_url(settings.redis_url, socket_connect_timeout=5)
            await redis.ping()
        # Before anything starts running: a bad manifest stops the start-up here.
        counters = HourlyCounters(redis, prefix=f"{settings.mongodb_db}:counters:")
        limiter = Limiter(settings, redis, counters, metrics)
        persisted = PersistedQueries.from_settings(settings, redis)
        if redis is not None:
            bus: EventBus = RedisBus(redis, prefix=f"{settings.mongodb_db}:")
            lease = RedisLease(redis, key=f"{settings.mongodb_db}:feed-lease")
        else:
            bus = MemoryBus()
            lease = LocalLease()  # type: ignore[assignment]
        hub = Hub()
        audit = AuditLog(bus, hub)
        # Accepted credentials, dropped as the bus (or this instance's own audit
        # entries, at once) announces changes: built before the bus starts.
        auth_cache = AuthCache(settings.auth_cache_seconds)
        auth_cache.attach(bus)
        audit.local_listeners.append(auth_cache.observe)
        identity = IdentityService(settings, audit, build_mailer(settings), metrics=metrics)
        api_keys = ApiKeys(audit, auth_cache)
        authenticator = TokenAuthenticator(identity.tokens, identity.sessions, api_keys)
        # Listens to the bus: built before it starts.
        credentials = LiveCredentials(bus, settings.ws_credential_recheck_seconds)
        market = MarketService(bus, hub, metrics)
        liquidity: LiquidityBook = (
            RedisLiquidity(redis, f"{settings.mongodb_db}:", settings.top_of_book_usd)
            if redis is not None
            else MemoryLiquidity(settings.top_of_book_usd)
        )
        trading = TradingEngine(settings, market, bus, hub, audit, metrics, liquidity=liquidity)
        # Listens to the bus and the market's ticks: built before the bus starts.
        alerts = PriceAlerts(bus, hub, market, settings.alerts_max_active)
        watchlists = Watchlists(settings.watchlist_max_symbols)
        portfolio = PortfolioService(settings, market, trading, bus, hub)
        await market.load_history()
        await bus.start()
        started.append(("bus", bus.close))
        # After the bus starts: alert changes made while loading are not missed.
        await alerts.resync()
        started.append(("alerts", alerts.close))
        trading.start()
        started.append(("trading", trading.close))
        portfolio.start()
        started.append(("portfolio", portfolio.close))
        credentials.start()
        started.append(("credentials", credentials.close))
        market.start_writer()
        started.append(("market", market.close))
        chosen = build_feed(settings) if feed == "auto" else feed
        leader = FeedLeader(chosen, lease, market)  # type: ignore[arg-type]
        leader.start()
        started.append(("leader", leader.close))
        websockets = WebSocketRegistry(metrics)
        metrics.watch(market=market, leader=leader, websockets=websockets)
        # One instance sweeps: the holder of the feed lease.
        retention = Retention(
            store.db,
            timedelta(minutes=settings.retention_sweep_minutes),
            is_active=lambda: market.is_leader,
            metrics=metrics,
        )
        retention.register("audit_log", "at", timedelta(days=settings.audit_retention_days))
        # Throttling reads 24 hours of attempts; failures stay in the audit log.
        retention.register(
            "login_attempts", "at", timedelta(days=settings.login_attempt_retention_days)
        )
        retention.start()
    except BaseException:
        # Nothing started may go on against the connections closed below (the
        # trading sweeper, the candle writer, the bus reader, ...).
        for name, close in reversed(started):
            await bounded_step(name, close(), STARTED_CLOSE_SECONDS)
        if redis is not None:
            await redis.aclose()
        await store.close()
        raise
    admin = AdminService(
        identity,
        audit,
        limiter,
        counters,
        live=lambda: (websockets.count, metrics.active_subscriptions),
    )
    # Freezing an account cancels its open orders and releases their holds.
    admin.freeze_hooks.append(
        lambda user_id, actor, origin: trading.cancel_all(user_id, actor, origin)
    )
    return Services(
        settings,
        store,
        redis,
        bus,
        hub,
        market,
        leader,
        authenticator,
        audit,
        identity,
        api_keys,
        limiter=limiter,
        persisted_queries=persisted,
        watchlists=watchlists,
        alerts=alerts,
        portfolio=portfolio,
        credentials=credentials,
        admin=admin,
        trading=trading,
        privacy=Privacy(identity, audit, trading, watchlists, alerts),
        metrics=metrics,
        websockets=websockets,
        retention=retention,
    )


async def _migrate_on_start(store: Store) -> None:
    from cryptovault.migrations import MigrationError, migrate

    try:
        ran = await migrate(store.db)
    except MigrationError as exc:
        # Another instance is migrating, or the store is ahead of this code: serve
        # anyway (every migration keeps older data readable) and say so.
        log.warning("migrations not applied at start-up", extra={"reason": str(exc)})
        return
    if ran:
        log.info(
            "migrations applied at start-up", extra={"migrations": [s.migration.id for s in ran]}
        )


async def readiness(services: Services, timeout: float = 2.0) -> dict[str, str]:
    """Each dependency's state: "ok", or why it is not."""
    checks: dict[str, str] = {}

    async def check(name: str, probe) -> None:
        try:
            await asyncio.wait_for(probe(), timeout)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unreachable: {type(exc).__name__}"

    await check("store", services.store.ping)
    if services.redis is not None:
        await check("redis", services.redis.ping)
    services.metrics.dependencies_checked(checks)
    return checks


def metrics_endpoint(token: str | None) -> Callable[[Request], Awaitable[Response]]:
    """`GET /metrics`: Prometheus text format. With a token (METRICS_TOKEN), only for
    `Authorization: Bearer <token>`."""
    expected = token.encode() if token else None

    async def endpoint(request: Request) -> Response:
        if expected is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), expected
            ):
                return Response(
                    "metrics need Authorization: Bearer <METRICS_TOKEN>\n",
                    status_code=401,
                    media_type="text/plain",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        services: Services = request.app.state.services
        # One dependency check per scrape keeps `cryptovault_dependency_up` current
        # for the readiness alert (Prometheus cannot read /ready's JSON).
        await readiness(services)
        return Response(services.metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return endpoint
