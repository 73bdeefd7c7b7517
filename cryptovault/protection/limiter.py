"""Rate limits, held by `limits` in memory or in Redis (shared by every instance).

- Cost budgets: each identity (user, API key, or client IP when anonymous) may spend
  `budget` cost points per `window` seconds. The sliding window counter strategy keeps
  two counters per identity whatever the cost, and never charges a refused hit (the
  fixed window strategy does). Work done before it could be priced (parsing a new
  document) is charged in full even beyond the budget (`charge`): a debt.
- Auth limits: login, register, password reset and two-factor attempts, per client IP
  and per account (moving window: exact, and the numbers are small).
- The data export: `exportMyData` calls per user (moving window), whatever their
  static cost: each reads everything the user has.
- WebSocket connection slots per identity (this instance).

When the store is unreachable the limiter fails open (and logs): an outage of Redis
must not take the API down with it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass

import redis.asyncio as aioredis
from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.storage import memory as limits_memory
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from cryptovault.config import Settings, parse_auth_limits
from cryptovault.errors import BadUserInput, RateLimited
from cryptovault.events.counters import HourlyCounters
from cryptovault.observability.metrics import Metrics

log = logging.getLogger(__name__)

REJECTIONS = "rate_limit_rejections"

# Larger than any budget: what `Limiter.charge` passes as the limit, so that a charge
# for work already done is never refused (exact in Redis' Lua numbers too).
_NO_LIMIT = 2**52
_KEYS_KEPT = 10_000


@dataclass(slots=True)
class BudgetStatus:
    """An identity's cost budget after (or without) charging an operation."""

    limit: int
    remaining: int
    cost: int
    window_seconds: int
    # Seconds until the budget is full again.
    reset_in: float
    # Seconds until `cost` could be spent (0 when it was).
    retry_after: float = 0.0
    allowed: bool = True

    @property
    def restore_rate(self) -> float:
        """Points restored per second."""
        return self.limit / self.window_seconds

    @property
    def reset_at(self) -> float:
        return time.time() + self.reset_in


@dataclass(slots=True)
class _Counts:
    previous: int
    previous_ttl: float
    current: int
    current_ttl: float

    def used(self, window: int) -> float:
        return _used(self.previous, self.previous_ttl, self.current, window)


def _used(previous: int, previous_ttl: float, current: int, window: int) -> float:
    """The sliding window counter's weighted count: the previous window's count
    weighted by the share of it still inside the window, plus the current one's."""
    return previous * previous_ttl / window + current


def _status(limit: int, window: int, counts: _Counts, cost: int, allowed: bool) -> BudgetStatus:
    retry = 0.0 if allowed else _seconds_until_available(limit, window, counts, cost)
    return _budget(
        limit,
        window,
        counts.previous,
        counts.previous_ttl,
        counts.current,
        counts.current_ttl,
        cost if allowed else 0,
        retry,
        allowed,
    )


def _budget(
    limit: int,
    window: int,
    previous: int,
    previous_ttl: float,
    current: int,
    current_ttl: float,
    cost: int,
    retry: float,
    allowed: bool,
) -> BudgetStatus:
    """The status of counts (`_Counts`' fields, as they are after the operation)."""
    used = _used(previous, previous_ttl, current, window)
    reset_in = current_ttl if current else previous_ttl if previous else 0.0
    return BudgetStatus(
        limit, max(0, limit - math.floor(used)), cost, window, max(0.0, reset_in), retry, allowed
    )


def _seconds_until_available(limit: int, window: int, counts: _Counts, cost: int) -> float:
    """When the weighted count falls to `limit - cost`: the previous window's weight
    decays linearly until the current window ends; then the current becomes previous."""
    need = limit - cost
    window_ends_in = max(0.0, counts.current_ttl - window)
    if need < 0:
        return float(window)  # costs more than the whole budget: it never fits
    if counts.current > need:
        return window_ends_in + window * (1 - max(need, 0) / counts.current)
    if counts.previous == 0:
        return 0.0
    t = counts.previous_ttl - (need - counts.current) * window / counts.previous
    return max(0.0, min(t, window_ends_in))


class Limiter:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis | None = None,
        counters: HourlyCounters | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.auth_limits = parse_auth_limits(settings.auth_rate_limits)
        # Rejections over the last 24 h, for the admin `stats`.
        self.counters = counters or HourlyCounters()
        self.metrics = metrics
        if redis is not None and settings.redis_url:
            self.storage: MemoryStorage | RedisStorage = RedisStorage(
                settings.redis_url,
                implementation="redispy",
                key_prefix=f"{settings.mongodb_db}:limits",
                connection_pool=redis.connection_pool,  # type: ignore[arg-type]
            )
        else:
            self.storage = MemoryStorage()
        # Budgets in this process's memory: spent without `limits`' awaits.
        self._in_memory = type(self.storage) is MemoryStorage
        self._next_sweep = 0.0
        self._sweep_due = False
        # Identity -> the windows its budget's counters are in now (current, previous)
        # and their names in the storage (previous, current; `RateLimitItem.key_for`).
        self._keys: dict[str, tuple[int, int, str, str]] = {}
        self.budgets = SlidingWindowCounterRateLimiter(self.storage)
        self.attempts = MovingWindowRateLimiter(self.storage)
        self.window = settings.cost_window_seconds
        self.budget_identified = RateLimitItemPerSecond(
            settings.cost_budget, settings.cost_window_seconds, namespace="cost"
        )
        self.budget_anonymous = RateLimitItemPerSecond(
            settings.cost_budget_anonymous, settings.cost_window_seconds, namespace="cost"
        )
        item = parse(settings.export_rate_limit)
        self.export_limit = type(item)(item.amount, item.multiples, namespace="export")
        self.max_connections = settings.ws_max_connections_per_identity
        self._connections: Counter[str] = Counter()
        self._last_failure_log = 0.0

    def _budget_item(self, key: str) -> RateLimitItem:
        return self.budget_anonymous if key.startswith("ip:") else self.budget_identified

    async def _counts(self, item: RateLimitItem, key: str) -> _Counts:
        raw = await self.storage.get_sliding_window(item.key_for(key), item.get_expiry())
        return _Counts(int(raw[0]), float(raw[1]), int(raw[2]), float(raw[3]))

    async def spend(self, key: str, cost: int) -> BudgetStatus:
        """Charge `cost` points to `key` (see `identity_key`); the status says whether
        it was allowed. Cost 0 only reads the budget."""
        item = self._budget_item(key)
        if self._in_memory:
            status = self._spend_in_memory(item, key, cost)
            if self._sweep_due:
                # What MemoryStorage.incr does on every hit, here at most once a
                # second: start its task that drops the expired counters.
                self._sweep_due = False
                schedule = getattr(self.storage, "_MemoryStorage__schedule_expiry", None)
                if schedule is not None:
                    await schedule()
            if not status.allowed:
                await self._rejected("cost")
            return status
        try:
            counts = await self._counts(item, key)
            allowed = cost <= 0 or await self.budgets.hit(item, key, cost=cost)
        except Exception:
            self._storage_failed()
            return self._unknown(item, cost)
        if not allowed:
            await self._rejected("cost")
        if allowed and cost > 0:
            counts = self._after(counts, cost)
        return _status(item.amount, self.window, counts, max(cost, 0), allowed)

    async def charge(self, key: str, cost: int) -> BudgetStatus:
        """Charge `cost` points of work already done (parsing and validating a new
        document), even beyond the budget: never refused. The debt is paid off by the
        refill, and `key` is refused everything that costs until then (at most two
        windows: the counters of older windows expire)."""
        item = self._budget_item(key)
        try:
            counts = await self._counts(item, key)
            if cost > 0:
                await self.storage.acquire_sliding_window_entry(
                    item.key_for(key), _NO_LIMIT, item.get_expiry(), cost
                )
        except Exception:
            self._storage_failed()
            return self._unknown(item, cost)
        if cost > 0:
            counts = self._after(counts, cost)
        return _status(item.amount, self.window, counts, max(cost, 0), True)

    def _spend_in_memory(self, item: RateLimitItem, key: str, cost: int) -> BudgetStatus:
        """`spend` on the in-memory storage in one synchronous step: what reading the
        counts and the sliding window counter's hit do there (the same counters, keys,
        expiry, weighting and rounding as `limits`' MemoryStorage, which `charge`,
        `afford` and the other limits go on using), without their seven awaits.
        Nothing else runs on the event loop meanwhile, so no lock is needed."""
        storage = self.storage
        assert isinstance(storage, MemoryStorage)
        counters, expirations = storage.storage, storage.expirations
        expiry = self.window  # item.get_expiry(): both budgets are `window` seconds long
        limit = item.amount
        # The storage's own clock (tests move it).
        now = limits_memory.time.time()
        # The two windows' counter names, made again only when a window ends.
        previous_window, current_window = int((now - expiry) / expiry), int(now / expiry)
        names = self._keys.get(key)
        if names is None or names[0] != current_window or names[1] != previous_window:
            if names is None and len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            base = item.key_for(key)
            names = self._keys[key] = (
                current_window,
                previous_window,
                f"{base}/{previous_window}",
                f"{base}/{current_window}",
            )
        previous_key, current_key = names[2], names[3]
        for name in (previous_key, current_key):
            # As MemoryStorage.get: an expired counter is dropped. (A counter always
            # has its expiry: MemoryStorage sets both at once.)
            expires = expirations.get(name)
            if expires is not None and expires <= now:
                counters.pop(name, None)
                expirations.pop(name, None)
                storage.locks.pop(name, None)
        previous = counters.get(previous_key, 0)
        current = counters.get(current_key, 0)
        previous_ttl = 0.0 if previous == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        if cost <= 0:
            return _budget(
                limit, expiry, previous, previous_ttl, current, current_ttl, 0, 0.0, True
            )
        weighted = _used(previous, previous_ttl, current, expiry)
        if cost > limit or math.floor(weighted) + cost > limit:
            counts = _Counts(previous, previous_ttl, current, current_ttl)
            return _status(limit, expiry, counts, cost, False)
        # As MemoryStorage.incr: a new counter lives two windows.
        counters[current_key] = current + cost
        if current == 0:
            expirations[current_key] = now + 2 * expiry
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self._sweep_due = True
        # As `_after`: the counts once `cost` was added.
        return _budget(
            limit, expiry, previous, previous_ttl, current + cost, current_ttl, cost, 0.0, True
        )

    def _after(self, counts: _Counts, cost: int) -> _Counts:
        """The counts once `cost` was added: one round trip fewer than reading them
        again. A first hit opens a window that lives two window lengths (as limits
        does)."""
        ttl = counts.current_ttl if counts.current_ttl > 0 else 2.0 * self.window
        return _Counts(counts.previous, counts.previous_ttl, counts.current + cost, ttl)

    async def peek(self, key: str) -> BudgetStatus:
        return await self.spend(key, 0)

    async def afford(self, key: str, cost: int) -> BudgetStatus:
        """Whether `key` could spend `cost` now (and if not, when), charging nothing."""
        item = self._budget_item(key)
        try:
            counts = await self._counts(item, key)
        except Exception:
            self._storage_failed()
            return self._unknown(item, 0)
        allowed = counts.used(self.window) + cost <= item.amount
        if not allowed:
            await self._rejected("cost")
        return _status(item.amount, self.window, counts, cost, allowed)

    def _unknown(self, item: RateLimitItem, cost: int) -> BudgetStatus:
        return BudgetStatus(item.amount, item.amount, cost, self.window, 0.0)

    def _storage_failed(self) -> None:
        now = time.monotonic()
        if now - self._last_failure_log > 10:
            self._last_failure_log = now
            log.error("rate limit store unreachable: limits are not enforced", exc_info=True)

    async def hit_auth(self, kind: str, ip: str, account: str | None = None) -> None:
        """Count one `kind` attempt ("login", "register", "password_reset",
        "two_factor") from `ip` for `account` (an email or user id); raise RateLimited
        (with `retryAfter` seconds) when either limit is exhausted. Call it before the
        expensive work (password hashing), for failed and successful attempts alike."""
        if kind not in self.auth_limits:
            raise BadUserInput(f"Unknown rate limit kind {kind!r}")
        per_ip, per_account = self.auth_limits[kind]
        checks = [(per_ip, f"{kind}/ip/{ip}", "ip")]
        if account:
            checks.append((per_account, f"{kind}/account/{account.strip().lower()}", "account"))
        for item, key, scope in checks:
            try:
                allowed = await self.attempts.hit(item, key)
                if allowed:
                    continue
                stats = await self.attempts.get_window_stats(item, key)
            except Exception:
                self._storage_failed()
                return
            retry = max(1, math.ceil(stats.reset_time - time.time()))
            await self._rejected("auth")
            raise RateLimited(
                f"Too many {kind.replace('_', ' ')} attempts; retry in {retry} s",
                retryAfter=retry,
                scope=scope,
            )

    async def hit_export(self, user_id: str) -> None:
        """Count one data export of `user_id`; raise RateLimited (with `retryAfter`
        seconds) once EXPORT_RATE_LIMIT is reached. Call it before reading anything."""
        key = f"export/user/{user_id}"
        try:
            if await self.attempts.hit(self.export_limit, key):
                return
            stats = await self.attempts.get_window_stats(self.export_limit, key)
        except Exception:
            self._storage_failed()
            return
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        await self._rejected("export")
        raise RateLimited(
            f"At most {self.export_limit.amount} data exports per "
            f"{self.export_limit.get_expiry()} s; retry in {retry} s",
            retryAfter=retry,
            scope="account",
        )

    async def _rejected(self, limit: str) -> None:
        await self.counters.incr(REJECTIONS)
        if self.metrics is not None:
            self.metrics.rate_limited(limit)

    def acquire_connection(self, key: str) -> bool:
        """Take a WebSocket slot for `key` on this instance; False when the identity
        already holds the maximum."""
        if self._connections[key] >= self.max_connections:
            return False
        self._connections[key] += 1
        return True

    def release_connection(self, key: str) -> None:
        self._connections[key] -= 1
        if self._connections[key] <= 0:
            del self._connections[key]
