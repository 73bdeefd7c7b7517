"""Everything the app builds once at start-up and hands to requests: the store, the
event bus and hub, the market service and the feed leader, identity (accounts,
sessions, API keys, the authenticator), the audit log, watchlists and price alerts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from cryptovault.config import Settings
from cryptovault.db import Store, open_store
from cryptovault.events.bus import EventBus, MemoryBus, RedisBus
from cryptovault.events.hub import Hub
from cryptovault.events.lease import LocalLease, RedisLease
from cryptovault.market.feeds import Feed, build_feed
from cryptovault.market.leader import FeedLeader
from cryptovault.market.service import MarketService
from cryptovault.portfolio.alerts import PriceAlerts
from cryptovault.portfolio.watchlist import Watchlists
from cryptovault.protection.limiter import Limiter
from cryptovault.protection.persisted import PersistedQueries
from cryptovault.security.apikeys import ApiKeys
from cryptovault.security.audit import AuditLog
from cryptovault.security.authenticator import TokenAuthenticator
from cryptovault.security.identity import IdentityService
from cryptovault.security.mailer import LogMailer, build_mailer
from cryptovault.security.viewer import Authenticator

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
    persisted_queries: PersistedQueries
    watchlists: Watchlists
    alerts: PriceAlerts

    async def close(self) -> None:
        await self.identity.drain()
        await self.leader.close()
        await self.alerts.close()
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
    store = await open_store(
        settings.mongodb_url,
        settings.mongodb_db,
        settings.data_dir,
        event_listeners=event_listeners,
    )
    redis = None
    try:
        if settings.redis_url:
            redis = aioredis.from_url(settings.redis_url, socket_connect_timeout=5)
            await redis.ping()
        # Before anything starts running: a bad manifest stops the start-up here.
        limiter = Limiter(settings, redis)
        persisted = PersistedQueries.from_settings(settings, redis)
        if redis is not None:
            bus: EventBus = RedisBus(redis, prefix=f"{settings.mongodb_db}:")
            lease = RedisLease(redis, key=f"{settings.mongodb_db}:feed-lease")
        else:
            bus = MemoryBus()
            lease = LocalLease()  # type: ignore[assignment]
        hub = Hub()
        audit = AuditLog(bus, hub)
        mailer = build_mailer(settings)
        if settings.is_production and isinstance(mailer, LogMailer):
            log.warning("MAILER=log in production: password reset mails only reach the log")
        identity = IdentityService(settings, audit, mailer)
        api_keys = ApiKeys(audit)
        authenticator = TokenAuthenticator(identity.tokens, identity.sessions, api_keys)
        market = MarketService(bus, hub)
        # Listens to the bus and the market's ticks: built before the bus starts.
        alerts = PriceAlerts(bus, hub, market, settings.alerts_max_active)
        watchlists = Watchlists(settings.watchlist_max_symbols)
        await market.load_history()
        await bus.start()
        # After the bus starts: alert changes made while loading are not missed.
        await alerts.resync()
        market.start_writer()
        chosen = build_feed(settings) if feed == "auto" else feed
        leader = FeedLeader(chosen, lease, market)  # type: ignore[arg-type]
        leader.start()
    except BaseException:
        if redis is not None:
            await redis.aclose()
        await store.close()
        raise
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
    return checks
