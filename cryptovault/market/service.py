"""The market service: every instance's view of the market. It consumes ticks from the
event bus (whoever produced them), keeps the latest quote, rolling 24 h statistics and
open candles in memory, and republishes to local subscribers through the hub. The
leader also persists closed candles and then announces them on the bus, from which
every instance keeps its cache of closed candles (market/candle_cache.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import repeat
from typing import Any

from beanie import SortDirection
from pymongo import UpdateOne

from cryptovault.documents.candles import CandleDocument
from cryptovault.errors import BadUserInput
from cryptovault.events.bus import Channel, EventBus
from cryptovault.events.hub import Hub
from cryptovault.market.assets import ASSETS, Asset
from cryptovault.market.candle_cache import CandleCache, candle_from_message, candle_to_message
from cryptovault.market.candles import RETENTION, Candle, CandleBook, Interval
from cryptovault.market.stats import MINUTES, DayStats, RollingStats
from cryptovault.market.ticks import Tick
from cryptovault.observability.metrics import Metrics
from cryptovault.paging import Listing, Page, decode_cursor, encode_cursor

log = logging.getLogger(__name__)

TICKS_CHANNEL = "market.ticks"
# Ticks as values: in process they travel without the JSON round trip when it would
# give the same tick back (events/bus.py).
TICKS: Channel[Tick] = Channel(
    TICKS_CHANNEL, Tick.to_message, Tick.from_message, Tick.survives_json
)
# Closed candles, published by the leader once they are in the store.
CANDLES_CHANNEL = "market.candles"
# Candle pages: newest first, the cursor is a candle's start (whole seconds).
CANDLES = Listing("candle", default=100, maximum=500, sort_field="start")

# Called with every accepted tick, after the quote is updated (e.g. price alerts).
TickListener = Callable[[Tick], None]


def price_topic(symbol: str) -> str:
    return f"price:{symbol}"


def candle_topic(symbol: str, interval: Interval) -> str:
    return f"candle:{symbol}:{interval.value}"


# Every tick publishes to its symbol's price topic and five candle topics: their
# names are made once per symbol, not formatted again on every tick.
_TOPICS: dict[str, tuple[str, tuple[tuple[Interval, str], ...]]] = {}


def _topics(symbol: str) -> tuple[str, tuple[tuple[Interval, str], ...]]:
    topics = _TOPICS.get(symbol)
    if topics is None:
        candles = tuple((i, candle_topic(symbol, i)) for i in Interval)
        topics = _TOPICS[symbol] = (price_topic(symbol), candles)
    return topics


@dataclass(frozen=True, slots=True)
class Quote:
    """The latest tick of an asset with its 24 h statistics."""

    tick: Tick
    day: DayStats | None

    @property
    def symbol(self) -> str:
        return self.tick.symbol


class MarketService:
    def __init__(
        self,
        bus: EventBus,
        hub: Hub,
        metrics: Metrics | None = None,
        cache_candles: bool = True,
    ) -> None:
        self.bus = bus
        self.hub = hub
        self.metrics = metrics
        self.latest: dict[str, Tick] = {}
        self.candles = CandleBook()
        self.stats = RollingStats()
        self.is_leader = False
        self.ticks_received = 0
        self._pending: list[Candle] = []
        self._flush_wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._tick_listeners: list[TickListener] = []
        # Closed candle pages from memory; None: every page from the store.
        self.candle_cache = CandleCache(self._stored_candles) if cache_candles else None
        self._publisher = uuid.uuid4().hex
        self._published = 0
        # Bumped by every change to what a symbol's candle pages show (a tick moves
        # the open candle; closed candles arrive): cached answers check it.
        self.versions: dict[str, int] = {}
        # What the 24 h statistics slide with (tests move it).
        self.clock: Callable[[], datetime] = _utc_now
        bus.subscribe_values(TICKS, self._on_tick)
        bus.subscribe(CANDLES_CHANNEL, self._on_candles)
        bus.on_reconnect(self._on_reconnect)

    def add_tick_listener(self, listener: TickListener) -> None:
        """Call `listener(tick)` for every tick this instance accepts (known symbol,
        not stale), once `quote(symbol)` reflects it. Listeners run on the tick path:
        they must be quick and not block; a failing listener is logged, not fatal."""
        self._tick_listeners.append(listener)

    # -- ingestion -------------------------------------------------------------------

    async def publish_tick(self, tick: Tick) -> None:
        """What a feed calls: put the tick on the bus for every instance."""
        await self.bus.publish_value(TICKS, tick)
        if self.metrics is not None:
            self.metrics.tick_ingested(tick.source)

    async def _on_tick(self, tick: Tick) -> None:
        self.apply(tick)

    def apply(self, tick: Tick) -> None:
        if tick.symbol not in ASSETS:
            return
        previous = self.latest.get(tick.symbol)
        if previous is not None and tick.timestamp < previous.timestamp - timedelta(seconds=5):
            return  # a stale tick (e.g. a replayed message) must not move the price back
        self.ticks_received += 1
        self.latest[tick.symbol] = tick
        self._changed(tick.symbol)
        for candle in self.candles.apply(tick):
            if candle.interval is Interval.ONE_MINUTE:
                self.stats.add_closed_minute(candle)
            if self.is_leader:
                self._pending.append(candle)
                self._flush_wakeup.set()
            self.hub.publish(candle_topic(candle.symbol, candle.interval), candle)
        hub = self.hub
        prices, candles = _topics(tick.symbol)
        hub.publish(prices, self.quote(tick.symbol))
        for interval, topic in candles:
            current = self.candles.open_candle(tick.symbol, interval)
            if current is not None:
                hub.publish(topic, current)
        for listener in self._tick_listeners:
            try:
                listener(tick)
            except Exception:
                log.exception("tick listener failed", extra={"symbol": tick.symbol})

    # -- reads -----------------------------------------------------------------------

    def quote(self, symbol: str, now: datetime | None = None) -> Quote | None:
        """The latest tick of `symbol` with its 24 h statistics at `now` (the clock)."""
        tick = self.latest.get(symbol)
        if tick is None:
            return None
        current = self.candles.open_candle(symbol, Interval.ONE_MINUTE)
        return Quote(tick, self.stats.stats(symbol, current, now or self.clock()))

    def quotes(self, assets: Sequence[Asset], now: datetime | None = None) -> list[Quote]:
        now = now or self.clock()
        return [q for a in assets if (q := self.quote(a.symbol, now)) is not None]

    def quotes_version(self, symbols: Sequence[str], now: datetime | None = None) -> Hashable:
        """All that `quotes` of `symbols` at `now` (the clock) reads, as one value: it
        differs whenever their answer may (a tick of any of them, a closed minute
        added, the 24 h window moving on to its next minute)."""
        # versions.get(symbol, 0) for each symbol, in one C loop (on every kept
        # `prices` answer's check).
        return (
            tuple(map(self.versions.get, symbols, repeat(0))),
            self.stats.version(now or self.clock()),
        )

    def version(self, symbol: str) -> int:
        return self.versions.get(symbol, 0)

    def _changed(self, symbol: str) -> None:
        self.versions[symbol] = self.versions.get(symbol, 0) + 1

    async def candle_page(
        self, symbol: str, interval: Interval, first: int, before: datetime | None
    ) -> tuple[list[Candle], bool]:
        """Newest first: the open candle (when no cursor), then closed ones older than
        `before` (from the cache, the store for what it does not hold). Returns the
        page and whether more exist."""
        first = CANDLES.size(first)
        page: list[Candle] = []
        current = self.candles.open_candle(symbol, interval)
        if before is None and current is not None:
            page.append(current)
            before = current.start
        limit = first - len(page) + 1
        if self.candle_cache is None:
            page.extend(await self._stored_candles(symbol, interval, before, limit))
        else:
            now = datetime.now(UTC)
            page.extend(await self.candle_cache.page(symbol, interval, before, limit, now))
        return page[:first], len(page) > first

    async def candles_page(
        self, symbol: str, interval: Interval, first: int | None, after: str | None
    ) -> Page[Candle]:
        """A page of `candle_page`, after a cursor (cryptovault/paging.py)."""
        size = CANDLES.size(first)
        before = None
        if after is not None:
            raw = decode_cursor(CANDLES.cursor, after)
            if not raw.isdigit():
                raise BadUserInput("Invalid cursor", cursor=after)
            before = datetime.fromtimestamp(int(raw), UTC)
        found, more = await self.candle_page(symbol, interval, size, before)
        previous = False
        if before is not None:
            # Before the cursor's candle: the open candle or a stored one that new.
            newest, _ = await self.candle_page(symbol, interval, 1, None)
            previous = bool(newest) and _aware(newest[0].start) >= before
        return Page(found, more, previous, _candle_cursor)

    async def _stored_candles(
        self, symbol: str, interval: Interval, before: datetime | None, limit: int
    ) -> list[Candle]:
        """The newest `limit` stored candles older than `before`, newest first."""
        query: dict[str, Any] = {"symbol": symbol, "interval": interval.value}
        if before is not None:
            query["start"] = {"$lt": before}
        # Raw documents: a page is read-only, and validating it into Beanie models
        # took a quarter of a 100-candle query's CPU. batch_size: the whole page in
        # the first reply (MongoDB's first batch is otherwise 101): one round trip.
        cursor = CandleDocument.get_pymongo_collection().find(
            query, sort=[("start", -1)], limit=limit, batch_size=limit
        )
        return [_from_raw(d) async for d in cursor]

    async def _on_reconnect(self) -> None:
        # Announcements may have been lost while the bus was down: refill the cache
        # now rather than at the next announcement's gap.
        if self.candle_cache is not None:
            self.candle_cache.drop()
        for symbol in ASSETS:
            self._changed(symbol)

    async def _on_candles(self, message: dict[str, Any]) -> None:
        candles = [candle_from_message(m) for m in message["candles"]]
        if self.candle_cache is not None:
            self.candle_cache.on_message(
                str(message["publisher"]), int(message["seq"]), candles, datetime.now(UTC)
            )
        for symbol in {c.symbol for c in candles}:
            self._changed(symbol)

    # -- persistence (leader) --------------------------------------------------------

    async def load_history(self) -> None:
        """Seed 24 h statistics and the open candles from persisted minutes."""
        now = datetime.now(UTC)
        since = now - timedelta(minutes=MINUTES)
        docs = (
            await CandleDocument.find(
                {"interval": Interval.ONE_MINUTE.value, "start": {"$gte": since}}
            )
            .sort([("start", SortDirection.ASCENDING)])
            .to_list()
        )
        minutes = [_from_doc(d) for d in docs]
        for candle in minutes:
            self.stats.add_closed_minute(candle)
        self.candles.seed(minutes, now)
        log.info("market history loaded", extra={"minutes": len(minutes)})

    def start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="candle-writer")

    async def _write_loop(self) -> None:
        last_prune = datetime.min.replace(tzinfo=UTC)
        while not self._closing:
            await self._flush_wakeup.wait()
            self._flush_wakeup.clear()
            await self.flush()
            if not self._closing and datetime.now(UTC) - last_prune > timedelta(hours=1):
                await self.prune()
                last_prune = datetime.now(UTC)

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        ops = [UpdateOne({"_id": c.key}, {"$set": _to_fields(c)}, upsert=True) for c in batch]
        try:
            await CandleDocument.get_pymongo_collection().bulk_write(ops, ordered=False)
        except BaseException as exc:
            # Upserts by deterministic id are idempotent: keep the batch for a retry.
            self._pending[:0] = batch
            if not isinstance(exc, Exception):
                raise
            log.exception("candle flush failed; will retry", extra={"candles": len(batch)})
            await asyncio.sleep(1)
            self._flush_wakeup.set()
            return
        await self._announce(batch)

    async def _announce(self, batch: list[Candle]) -> None:
        """Tell every instance's cache (this one's too, through the bus) what is now
        stored. Numbered: a lost message shows as a gap, and the caches refill."""
        seq, self._published = self._published, self._published + 1
        message = {
            "publisher": self._publisher,
            "seq": seq,
            "candles": [candle_to_message(c) for c in batch],
        }
        try:
            await self.bus.publish(CANDLES_CHANNEL, message)
        except Exception:
            log.warning("could not announce closed candles", exc_info=True)

    async def prune(self) -> None:
        now = datetime.now(UTC)
        for interval, keep in RETENTION.items():
            if keep is not None:
                # By close time: a candle goes once its whole interval is past
                # retention (candles stored before migration 0001 get `end` there).
                await CandleDocument.get_pymongo_collection().delete_many(
                    {"interval": interval.value, "end": {"$lt": now - keep}}
                )

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the writer after its current write (never cut a write in half), then
        persist what is still pending."""
        self._closing = True
        self._flush_wakeup.set()
        if self._writer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._writer, timeout)
            self._writer = None
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except Exception:
            log.exception("final candle flush failed", extra={"candles": len(self._pending)})


def _to_fields(c: Candle) -> dict[str, Any]:
    from bson import Decimal128

    return {
        "symbol": c.symbol,
        "interval": c.interval.value,
        "start": c.start,
        "end": c.end,
        "open": Decimal128(c.open),
        "high": Decimal128(c.high),
        "low": Decimal128(c.low),
        "close": Decimal128(c.close),
        "volume": Decimal128(c.volume),
        "ticks": c.ticks,
    }


def _from_raw(d: dict[str, Any]) -> Candle:
    start = d["start"] if d["start"].tzinfo else d["start"].replace(tzinfo=UTC)
    return Candle(
        symbol=d["symbol"],
        interval=Interval(d["interval"]),
        start=start,
        open=d["open"].to_decimal(),
        high=d["high"].to_decimal(),
        low=d["low"].to_decimal(),
        close=d["close"].to_decimal(),
        volume=d["volume"].to_decimal(),
        ticks=d["ticks"],
        closed=True,
    )


def _from_doc(d: CandleDocument) -> Candle:
    start = d.start if d.start.tzinfo else d.start.replace(tzinfo=UTC)
    return Candle(
        symbol=d.symbol,
        interval=Interval(d.interval),
        start=start,
        open=Decimal(d.open),
        high=Decimal(d.high),
        low=Decimal(d.low),
        close=Decimal(d.close),
        volume=Decimal(d.volume),
        ticks=d.ticks,
        closed=True,
    )


def _candle_cursor(candle: Candle) -> str:
    return encode_cursor(CANDLES.cursor, str(int(candle.start.timestamp())))


# datetime.now(UTC), without a Python frame of its own (the clock of every kept
# `prices` answer's check).
_utc_now: Callable[[], datetime] = functools.partial(datetime.now, UTC)


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at
