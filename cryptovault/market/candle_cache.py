"""Closed candles in memory, so that a candle page costs no store read.

A closed candle never changes once written, so every instance can keep the newest
ones. Invariant: for each (symbol, interval) it holds, the cache has *every* candle
the store has from `covered_from` on (all of them when `covered_from` is None), with
the store's values. A page takes what it can from the cache and reads the store only
for what lies older than `covered_from` (cold history).

How it stays equal to the store:
- filled once per (symbol, interval), lazily, by reading the newest DEPTH candles;
- then kept current by the leader's `market.candles` messages, each published after
  the bulk write that persisted its candles (a reader never sees a candle the store
  does not hold). Every instance fills from these messages, not from the candles its
  own ticks closed: an instance that missed ticks (it started mid-minute, lost the
  Redis connection) closes a different candle than the leader wrote.
- messages are numbered per publisher: a gap (a lost message) or a new publisher (a
  failover, this instance's start) could hide a write, so the whole cache is dropped
  and refilled from the store on the next page of each key.
- oldest candles leave by DEPTH and by retention (`RETENTION`, a few minutes ahead of
  the store's pruning), moving `covered_from` up, so the cache never keeps a candle
  the store has pruned.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptovault.market.candles import RETENTION, Candle, Interval

__all__ = ["DEPTH", "CandleCache", "candle_from_message", "candle_to_message"]

# Candles kept per (symbol, interval): two maximum pages.
DEPTH = 1000
# Candles leave the cache this long before the store's retention would prune them.
RETENTION_MARGIN = timedelta(minutes=10)

type Key = tuple[str, Interval]
# Reads the newest `limit` closed candles older than `before` (None: the newest),
# newest first.
type StoreRead = Callable[[str, Interval, datetime | None, int], Awaitable[list[Candle]]]


@dataclass(slots=True)
class _Series:
    """Closed candles of one key, oldest first."""

    candles: list[Candle] = field(default_factory=list)
    starts: list[datetime] = field(default_factory=list)
    # Every stored candle from here on is in `candles`; None: every stored candle.
    covered_from: datetime | None = None
    loaded: bool = False
    # One fill at a time: the pages that wait for it are then served from memory.
    filling: asyncio.Lock = field(default_factory=asyncio.Lock)

    def has(self, start: datetime) -> bool:
        i = bisect.bisect_left(self.starts, start)
        return i < len(self.starts) and self.starts[i] == start

    def put(self, candle: Candle) -> None:
        i = bisect.bisect_left(self.starts, candle.start)
        if i < len(self.starts) and self.starts[i] == candle.start:
            self.candles[i] = candle  # written again (a retry, a second leader): the latest
        else:
            self.starts.insert(i, candle.start)
            self.candles.insert(i, candle)

    def drop_oldest(self, count: int) -> None:
        if count <= 0:
            return
        newest_dropped = self.starts[count - 1]
        del self.candles[:count], self.starts[:count]
        # What is left starts the covered range.
        self.covered_from = (
            self.starts[0] if self.starts else newest_dropped + timedelta(microseconds=1)
        )

    def newest_before(self, before: datetime | None, limit: int) -> list[Candle]:
        end = len(self.starts) if before is None else bisect.bisect_left(self.starts, before)
        return self.candles[max(0, end - limit) : end][::-1]


class CandleCache:
    def __init__(self, read: StoreRead, depth: int = DEPTH) -> None:
        self._read = read
        self.depth = depth
        self._series: dict[Key, _Series] = {}
        self._publisher: str | None = None
        self._seq = -1
        # Bumped by every drop: a fill that started before one must not be kept.
        self._generation = 0
        # Observability for tests and the bench: store reads made by pages.
        self.fills = 0
        self.cold_reads = 0

    # -- pages -----------------------------------------------------------------------

    async def page(
        self, symbol: str, interval: Interval, before: datetime | None, limit: int, now: datetime
    ) -> list[Candle]:
        """The newest `limit` closed candles older than `before` (None: all), newest
        first, as the store would answer."""
        series = self._series.get((symbol, interval))
        if series is None or not series.loaded:
            series = await self._fill(symbol, interval, now)
        self._trim(series, interval, now)
        found = series.newest_before(before, limit)
        if len(found) == limit or series.covered_from is None:
            return found
        # Cold history: what lies before the covered range is only in the store.
        older_than = series.covered_from if before is None else min(before, series.covered_from)
        self.cold_reads += 1
        return found + await self._read(symbol, interval, older_than, limit - len(found))

    async def _fill(self, symbol: str, interval: Interval, now: datetime) -> _Series:
        key = (symbol, interval)
        # Messages received while the read is in flight go into this series too.
        series = self._series.setdefault(key, _Series())
        async with series.filling:
            if series.loaded:
                return series  # filled while this page waited
            generation = self._generation
            self.fills += 1
            stored = await self._read(symbol, interval, None, self.depth)
            for candle in stored:
                if not series.has(candle.start):  # else a message brought a later write
                    series.put(candle)
            series.covered_from = stored[-1].start if len(stored) == self.depth else None
            # A drop meanwhile (a missed message) may hide a write this read missed:
            # the series answers this page, and the next page fills again.
            series.loaded = self._generation == generation and self._series.get(key) is series
        return series

    def _trim(self, series: _Series, interval: Interval, now: datetime) -> None:
        excess = len(series.candles) - self.depth
        keep = RETENTION[interval]
        if keep is not None and series.starts:
            # The store prunes a candle once its end is past retention.
            horizon = now - keep + RETENTION_MARGIN - timedelta(seconds=interval.seconds)
            if series.starts[0] < horizon:
                excess = max(excess, bisect.bisect_left(series.starts, horizon))
        series.drop_oldest(excess)

    # -- the leader's messages -------------------------------------------------------

    def on_message(
        self, publisher: str, seq: int, candles: Iterable[Candle], now: datetime
    ) -> None:
        if publisher != self._publisher or seq != self._seq + 1:
            self.drop()  # a message may have been missed: refill from the store
        self._publisher, self._seq = publisher, seq
        for candle in candles:
            series = self._series.get((candle.symbol, candle.interval))
            if series is not None:  # keys never filled stay cold
                series.put(candle)
                self._trim(series, candle.interval, now)

    def drop(self) -> None:
        self._series.clear()
        self._generation += 1


def candle_to_message(c: Candle) -> dict[str, Any]:
    return {
        "symbol": c.symbol,
        "interval": c.interval.value,
        "start": int(c.start.timestamp()),
        "open": str(c.open),
        "high": str(c.high),
        "low": str(c.low),
        "close": str(c.close),
        "volume": str(c.volume),
        "ticks": c.ticks,
    }


def candle_from_message(m: dict[str, Any]) -> Candle:
    return Candle(
        symbol=str(m["symbol"]),
        interval=Interval(m["interval"]),
        start=datetime.fromtimestamp(int(m["start"]), UTC),
        open=Decimal(m["open"]),
        high=Decimal(m["high"]),
        low=Decimal(m["low"]),
        close=Decimal(m["close"]),
        volume=Decimal(m["volume"]),
        ticks=int(m["ticks"]),
        closed=True,
    )
