"""Everything the app builds once at start-up and hands to requests: the store, the
event bus and hub, the market service and the feed leader, identity (accounts,
sessions, API keys, the authenticator, the credentials open sockets hold), the audit
log, protection (limits, persisted queries), admin, trading, watchlists, price alerts
and the portfolio, metrics, the WebSocket registry and the retention job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

import redis.asyncio as aioredis

from cryptovault.admin.service import AdminService
from cryptovault.config import Settings
from cryptovault.db import Store, open_store
from cryptovault.events.bus import EventBus, MemoryBus, RedisBus
from cryptovault.events.counters import HourlyCounters
from cryptovault.events.hub import Hub
from cryptovault.events.lease import LocalLease, RedisLease
from cryptovault.extensions.persisted import PersistedQueries
from cryptovault.lifecycle import WebSocketRegistry
from cryptovault.market.feeds import Feed, build_feed
from cryptovault.market.leader import FeedLeader
from cryptovault.market.service import MarketService
from cryptovault.observability.metrics import Metrics
from cryptovault.portfolio.alerts import PriceAlerts
from cryptovault.portfolio.service import PortfolioService
from cryptovault.portfolio.watchlist import Watchlists
from cryptovault.protection.limiter import Limiter
from cryptovault.retention import Retention
from cryptovault.security.apikeys import ApiKeys
from cryptovault.security.audit import AuditLog
from cryptovault.security.authenticator import TokenAuthenticator
from cryptovault.security.credentials import LiveCredentials
from cryptovault.security.identity import IdentityService
from cryptovault.security.mailer import build_mailer
from cryptovault.security.privacy import Privacy
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

    async def close(self) -> None:
        if self.retention is not None:
            await self.retention.close()
        await self.identity.drain()
        await self.credentials.close()
        await self.trading.close()
        await self.leader.close()
        await self.alerts.close()
        await self.portfolio.close()
        await self.market.close()
        await self.bus.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        await self.store.close()


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
        identity = IdentityService(settings, audit, build_mailer(settings), metrics=metrics)
        api_keys = ApiKeys(audit)
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
        # After the bus starts: alert changes made while loading are not missed.
        await alerts.resync()
        trading.start()
        portfolio.start()
        credentials.start()
        market.start_writer()
        chosen = build_feed(settings) if feed == "auto" else feed
        leader = FeedLeader(chosen, lease, market)  # type: ignore[arg-type]
        leader.start()
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
