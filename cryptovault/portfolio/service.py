"""The portfolio service: a user's valuation, snapshots and performance history, and
the live valuation pushed to `portfolio` subscribers.

- `valuation(user_id)`: balances + books (checkpointed fold of the ledger) + quotes:
  a constant number of store commands whatever the number of holdings or trades.
- Snapshots (the points of `history`): on the feed leader, every
  SNAPSHOT_INTERVAL_MINUTES for every account (deterministic ids make a retried or
  doubled one a no-op), and after trades: coalesced, at most one point per account per
  TRADE_POINT_EVERY, written off the request path by one background writer (the first
  trade after a quiet interval at once, later ones as one point at the interval's end).
  A point is a valuation of what the ledger held at that time: one lost to a crash
  costs the chart a point, never a balance, and the next trade or schedule writes one.
- Live: one watch per user on each instance, shared by all that user's subscribers.
  A tick of a held asset marks it dirty, an order event marks its books stale; at most
  once per PUSH_EVERY a dirty watch is valued once and the same value goes to every
  subscriber of that user through the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from bson import Decimal128
from pymongo.errors import DuplicateKeyError

from cryptovault.config import Settings
from cryptovault.documents.common import new_id, now_ms
from cryptovault.documents.portfolio import PortfolioSnapshotDocument
from cryptovault.documents.trading import BalanceDocument
from cryptovault.errors import BadUserInput
from cryptovault.events.bus import EventBus
from cryptovault.events.hub import Hub, HubSubscription
from cryptovault.market.service import MarketService
from cryptovault.market.ticks import Tick
from cryptovault.portfolio.books import Books, BooksStore
from cryptovault.portfolio.performance import Valuation, time_weighted_return
from cryptovault.portfolio.valuation import BalanceLine, PortfolioValue, value_portfolio
from cryptovault.trading.engine import TradingEngine
from cryptovault.trading.order_events import OrderEvent

log = logging.getLogger(__name__)

PUSH_EVERY = 1.0  # seconds: at most one push per user per second
RELOAD_EVERY = 60.0  # seconds: watched books are reloaded at least this often
PUMP_EVERY = 0.1
SNAPSHOT_CONCURRENCY = 8
MAX_POINTS = 500
# At most one history point per account per this, however many trades it makes.
TRADE_POINT_EVERY = 60.0  # seconds


class HistoryRange(StrEnum):
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    YEAR = "YEAR"
    ALL = "ALL"


RANGES = {
    HistoryRange.DAY: timedelta(days=1),
    HistoryRange.WEEK: timedelta(days=7),
    HistoryRange.MONTH: timedelta(days=30),
    HistoryRange.YEAR: timedelta(days=365),
}


def portfolio_topic(user_id: str) -> str:
    return f"portfolio:{user_id}"


@dataclass(frozen=True, slots=True)
class History:
    start: datetime
    end: datetime
    points: tuple[Valuation, ...]  # every point used, oldest first (the last may be live)
    time_weighted_return: Decimal | None  # a fraction

    @property
    def start_value(self) -> Decimal | None:
        return self.points[0].value if self.points else None

    @property
    def end_value(self) -> Decimal | None:
        return self.points[-1].value if self.points else None

    @property
    def net_flows(self) -> Decimal:
        """Deposits and adjustments within the range."""
        if not self.points:
            return Decimal(0)
        return self.points[-1].net_flows - self.points[0].net_flows


def thin[T](items: Sequence[T], limit: int) -> list[T]:
    """At most `limit` items, evenly spread, always with the first and the last."""
    if len(items) <= limit:
        return list(items)
    if limit == 1:
        return [items[-1]]
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


@dataclass
class _Watch:
    user_id: str
    subscribers: int = 0
    books: Books | None = None
    balances: list[BalanceLine] = field(default_factory=list)
    symbols: frozenset[str] = frozenset()
    latest: PortfolioValue | None = None
    stale: bool = True  # books and balances must be reloaded
    dirty: bool = True  # the value must be recomputed
    loaded_at: float = 0.0
    pushed_at: float = 0.0


class PortfolioService:
    def __init__(
        self,
        settings: Settings,
        market: MarketService,
        trading: TradingEngine,
        bus: EventBus,
        hub: Hub,
    ) -> None:
        self.market = market
        self.trading = trading
        self.hub = hub
        self.books = BooksStore()
        self.snapshot_every = timedelta(minutes=settings.snapshot_interval_minutes)
        self.valuations = 0  # live valuations computed (one per user per change)
        self._watches: dict[str, _Watch] = {}
        self._by_symbol: dict[str, set[str]] = {}
        self._pump: asyncio.Task[None] | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._closing = False
        # Trade points: when each account's next one is due (monotonic), when its last
        # one was taken (kept for an interval), and the writer that takes them.
        self.trade_point_every = TRADE_POINT_EVERY
        self._points_due: dict[str, float] = {}
        self._points_taken: dict[str, float] = {}
        self._points_wake = asyncio.Event()
        self._points_lock = asyncio.Lock()
        self._point_writer: asyncio.Task[None] | None = None
        trading.order_events.add_listener(self._on_order_event)
        market.add_tick_listener(self._on_tick)

    # -- valuation -------------------------------------------------------------------

    def _price_of(self, asset: str) -> Decimal | None:
        quote = self.market.quote(asset)
        return quote.tick.price if quote is not None else None

    async def _balances(self, user_id: str) -> list[BalanceLine]:
        cursor = BalanceDocument.get_pymongo_collection().find(
            {"account": user_id}, {"asset": 1, "available": 1, "held": 1}
        )
        return [
            BalanceLine(b["asset"], b["available"].to_decimal(), b["held"].to_decimal())
            async for b in cursor
        ]

    async def _load(self, user_id: str) -> tuple[Books, list[BalanceLine]]:
        await self.trading.ensure_account(user_id)
        books = await self.books.load(user_id, self._price_of)
        return books, await self._balances(user_id)

    async def valuation(self, user_id: str) -> PortfolioValue:
        """The user's portfolio now. Store commands: the books (a point read and a
        count, plus a short read when trades landed since) and the balances."""
        books, balances = await self._load(user_id)
        return value_portfolio(user_id, now_ms(), balances, books, self.market.quote)

    # -- snapshots and history -------------------------------------------------------

    async def snapshot(
        self, user_id: str, reason: str = "manual", snapshot_id: str | None = None
    ) -> PortfolioValue:
        """Store the user's valuation now as a history point (idempotent by id)."""
        value = await self.valuation(user_id)
        doc = {
            "_id": snapshot_id or f"{user_id}:m:{value.at.timestamp():.3f}",
            "user_id": user_id,
            "at": value.at,
            "value": Decimal128(value.total_value),
            "cash": Decimal128(value.cash),
            "net_flows": Decimal128(value.net_flows),
            "reason": reason,
        }
        with contextlib.suppress(DuplicateKeyError):
            await PortfolioSnapshotDocument.get_pymongo_collection().insert_one(doc)
        return value

    async def snapshot_all(self, bucket: datetime) -> int:
        """A scheduled snapshot of every account (ids per bucket: a second run of the
        same bucket, on this or another instance, writes nothing)."""
        accounts = await BalanceDocument.get_pymongo_collection().distinct("account")
        users = [a for a in accounts if not str(a).startswith("house:")]
        gate = asyncio.Semaphore(SNAPSHOT_CONCURRENCY)
        epoch = int(bucket.timestamp())

        async def one(user_id: str) -> None:
            async with gate:
                try:
                    await self.snapshot(user_id, "schedule", f"{user_id}:h:{epoch}")
                except Exception:
                    log.exception("scheduled portfolio snapshot failed", extra={"user": user_id})

        await asyncio.gather(*(one(u) for u in users))
        return len(users)

    def resolve_range(
        self,
        range_: HistoryRange | None,
        start: datetime | None,
        end: datetime | None,
        now: datetime | None = None,
    ) -> tuple[datetime, datetime]:
        now = now or now_ms()
        if range_ is not None and (start is not None or end is not None):
            raise BadUserInput("Give either range or from/to, not both", field="range")
        end = end or now
        if start is None:
            chosen = range_ or HistoryRange.DAY
            start = (
                datetime(1970, 1, 1, tzinfo=UTC)
                if chosen is HistoryRange.ALL
                else end - RANGES[chosen]
            )
        if start >= end:
            raise BadUserInput("from must be before to", field="from")
        return start, end

    async def history(
        self, user_id: str, start: datetime, end: datetime, live: PortfolioValue | None = None
    ) -> History:
        """The snapshots in [start, end], starting from the last one before `start`
        (the value the range starts from), ending with the live value when `end` is
        now: `live` when the caller has it, else valued here. Two store reads."""
        snapshots = PortfolioSnapshotDocument.get_pymongo_collection()
        before = await snapshots.find_one(
            {"user_id": user_id, "at": {"$lte": start}}, sort=[("at", -1)]
        )
        cursor = snapshots.find({"user_id": user_id, "at": {"$gt": start, "$lte": end}}).sort(
            "at", 1
        )
        raw = ([before] if before else []) + [s async for s in cursor]
        points = [
            Valuation(s["at"], s["value"].to_decimal(), s["net_flows"].to_decimal()) for s in raw
        ]
        if end >= now_ms() - timedelta(seconds=1):
            live = live or await self.valuation(user_id)
            if not points or live.at > points[-1].at:
                points.append(Valuation(live.at, live.total_value, live.net_flows))
        return History(start, end, tuple(points), time_weighted_return(points))

    # -- schedules (feed leader) -----------------------------------------------------

    def start(self) -> None:
        self._scheduler = asyncio.create_task(self._schedule(), name="portfolio-snapshots")

    async def _schedule(self) -> None:
        last: datetime | None = None
        while not self._closing:
            if self.market.is_leader:
                bucket = self._bucket(datetime.now(UTC))
                if bucket != last:
                    try:
                        await self.snapshot_all(bucket)
                        last = bucket
                    except Exception:
                        log.exception("scheduled portfolio snapshots failed")
            await asyncio.sleep(30)

    def _bucket(self, now: datetime) -> datetime:
        every = self.snapshot_every.total_seconds()
        return datetime.fromtimestamp(now.timestamp() // every * every, UTC)

    # -- events ----------------------------------------------------------------------

    def _on_order_event(self, event: OrderEvent) -> None:
        user_id = event.user_id
        watch = self._watches.get(user_id)
        if watch is not None:
            watch.stale = watch.dirty = True
        if event.last_trade_id is not None and self.market.is_leader:
            self._trade_point_due(user_id)

    # -- trade points ------------------------------------------------------------------

    def _trade_point_due(self, user_id: str) -> None:
        """A trade landed: a history point after it, at once if the account had none
        for an interval, else one at the interval's end for every trade until then."""
        if user_id in self._points_due or self._closing:
            return  # one is due already: it will include this trade
        now = time.monotonic()
        last = self._points_taken.get(user_id)
        self._points_due[user_id] = now if last is None else last + self.trade_point_every
        self._points_wake.set()
        if self._point_writer is None or self._point_writer.done():
            # Its own context: the writer serves every request, it belongs to none.
            self._point_writer = asyncio.get_running_loop().create_task(
                self._write_trade_points(),
                name="portfolio-trade-points",
                context=contextvars.Context(),
            )

    async def _write_trade_points(self) -> None:
        while not self._closing and (self._points_due or self._points_taken):
            self._points_wake.clear()
            await self.write_trade_points(time.monotonic())
            now = time.monotonic()
            for user_id, at in list(self._points_taken.items()):
                if now - at >= self.trade_point_every:
                    del self._points_taken[user_id]  # quiet for an interval: forgotten
            wake = [
                *self._points_due.values(),
                *(at + self.trade_point_every for at in self._points_taken.values()),
            ]
            if not wake:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._points_wake.wait(), max(0.0, min(wake) - now))

    async def write_trade_points(self, until: float | None = None) -> int:
        """Take the trade points due by `until` (monotonic; None: every one pending)."""
        async with self._points_lock:
            due = [
                user_id for user_id, at in self._points_due.items() if until is None or at <= until
            ]
            if not due:
                return 0
            taken = time.monotonic()
            for user_id in due:
                del self._points_due[user_id]
                self._points_taken[user_id] = taken
            gate = asyncio.Semaphore(SNAPSHOT_CONCURRENCY)

            async def one(user_id: str) -> None:
                async with gate:
                    try:
                        # Its own id: two points of one account never share one.
                        await self.snapshot(user_id, "trade", f"{user_id}:t:{new_id()}")
                    except Exception:
                        log.exception(
                            "portfolio snapshot after a trade failed", extra={"user": user_id}
                        )

            await asyncio.gather(*(one(u) for u in due))
            return len(due)

    def _on_tick(self, tick: Tick) -> None:
        for user_id in self._by_symbol.get(tick.symbol, ()):
            self._watches[user_id].dirty = True

    # -- live valuation --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch(self, user_id: str) -> AsyncIterator[tuple[PortfolioValue, HubSubscription]]:
        """Subscribe to the user's live valuation: yields the current value and the
        hub subscription that receives each new one."""
        watch = self._watches.get(user_id)
        if watch is None:
            watch = self._watches[user_id] = _Watch(user_id)
        watch.subscribers += 1
        try:
            with self.hub.subscribe(portfolio_topic(user_id), maxsize=8) as sub:
                if watch.latest is None:
                    await self._refresh(watch)
                self._ensure_pump()
                assert watch.latest is not None
                yield watch.latest, sub
        finally:
            watch.subscribers -= 1
            if watch.subscribers == 0 and self._watches.get(user_id) is watch:
                del self._watches[user_id]
                self._index(watch, frozenset())

    def _index(self, watch: _Watch, symbols: frozenset[str]) -> None:
        for symbol in watch.symbols - symbols:
            users = self._by_symbol.get(symbol)
            if users is not None:
                users.discard(watch.user_id)
                if not users:
                    del self._by_symbol[symbol]
        for symbol in symbols - watch.symbols:
            self._by_symbol.setdefault(symbol, set()).add(watch.user_id)
        watch.symbols = symbols

    async def _refresh(self, watch: _Watch) -> PortfolioValue:
        if watch.stale or watch.books is None:
            watch.stale = False
            watch.books, watch.balances = await self._load(watch.user_id)
            watch.loaded_at = time.monotonic()
        watch.dirty = False
        value = value_portfolio(
            watch.user_id, now_ms(), watch.balances, watch.books, self.market.quote
        )
        self.valuations += 1
        watch.latest = value
        if self._watches.get(watch.user_id) is watch:
            self._index(watch, frozenset(h.asset for h in value.holdings))
        return value

    def _ensure_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run_pump(), name="portfolio-pump")

    async def _run_pump(self) -> None:
        while self._watches and not self._closing:
            now = time.monotonic()
            due: Sequence[_Watch] = [
                w
                for w in self._watches.values()
                if now - w.pushed_at >= PUSH_EVERY
                and (w.dirty or w.stale or now - w.loaded_at >= RELOAD_EVERY)
            ]
            for watch in due:
                if now - watch.loaded_at >= RELOAD_EVERY:
                    watch.stale = True  # e.g. an admin adjustment: no event tells us
                try:
                    value = await self._refresh(watch)
                except Exception:
                    log.exception("live portfolio valuation failed", extra={"user": watch.user_id})
                    watch.pushed_at = now
                    continue
                watch.pushed_at = now
                self.hub.publish(portfolio_topic(watch.user_id), value)
            await asyncio.sleep(PUMP_EVERY)

    # -- plumbing --------------------------------------------------------------------

    async def drain(self) -> None:
        """Take the trade points pending now (after those being taken)."""
        await self.write_trade_points()

    async def close(self, timeout: float = 5.0) -> None:
        self._closing = True
        for task in (self._scheduler, self._pump):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), timeout)  # points due: taken, not lost
        if self._point_writer is not None:
            self._point_writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._point_writer
