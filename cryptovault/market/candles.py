"""Candles (OHLCV) aggregated from ticks in memory. Only closed candles are written to
the store, so store writes per tick stay at zero."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cryptovault.market.ticks import Tick


class Interval(enum.Enum):
    ONE_MINUTE = "1m"
    FIVE_MINUTES = "5m"
    FIFTEEN_MINUTES = "15m"
    ONE_HOUR = "1h"
    ONE_DAY = "1d"

    # Members are singletons compared by identity: hash them so too (Enum's own
    # hashes the name in Python code, and an interval is a dict key on every tick).
    __hash__ = object.__hash__

    @property
    def seconds(self) -> int:
        return _SECONDS[self]

    def floor(self, ts: datetime) -> datetime:
        epoch = int(ts.timestamp())
        return datetime.fromtimestamp(epoch - epoch % self.seconds, UTC)


_SECONDS = {
    Interval.ONE_MINUTE: 60,
    Interval.FIVE_MINUTES: 300,
    Interval.FIFTEEN_MINUTES: 900,
    Interval.ONE_HOUR: 3600,
    Interval.ONE_DAY: 86400,
}

# Every interval with its length, in `Interval` order (the per-tick loop's table).
_INTERVAL_SECONDS = tuple((i, _SECONDS[i]) for i in Interval)

# How long closed candles are kept in the store, per interval (None: forever). The
# embedded store slows down with collection size; MongoDB does not mind either way.
RETENTION: dict[Interval, timedelta | None] = {
    Interval.ONE_MINUTE: timedelta(days=2),
    Interval.FIVE_MINUTES: timedelta(days=14),
    Interval.FIFTEEN_MINUTES: timedelta(days=45),
    Interval.ONE_HOUR: timedelta(days=400),
    Interval.ONE_DAY: None,
}


@dataclass(frozen=True, slots=True)
class Candle:
    symbol: str
    interval: Interval
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    ticks: int = 1
    closed: bool = False

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.interval.seconds)

    @property
    def key(self) -> str:
        """Deterministic id: a candle written twice (two leaders, a retry) is one."""
        return f"{self.symbol}:{self.interval.value}:{int(self.start.timestamp())}"

    def add(self, price: Decimal, volume: Decimal, ticks: int = 1) -> Candle:
        # The constructor, not `dataclasses.replace` (which inspects the fields on
        # every call): this runs for five intervals on every tick.
        return Candle(
            self.symbol,
            self.interval,
            self.start,
            self.open,
            price if price > self.high else self.high,
            price if price < self.low else self.low,
            price,
            self.volume + volume,
            self.ticks + ticks,
            self.closed,
        )

    def merge(self, later: Candle) -> Candle:
        """Fold a later, finer candle (e.g. a minute) into this one."""
        return replace(
            self,
            high=max(self.high, later.high),
            low=min(self.low, later.low),
            close=later.close,
            volume=self.volume + later.volume,
            ticks=self.ticks + later.ticks,
        )


def _start_of(
    starts: dict[tuple[str, Interval], tuple[datetime, int]],
    key: tuple[str, Interval],
    candle: Candle,
) -> int:
    """The open candle's start in epoch seconds, computed once per start (`seed`, or a
    test, may put a candle in `current` directly: then its start is another object)."""
    known = starts.get(key)
    if known is not None and known[0] is candle.start:
        return known[1]
    start = int(candle.start.timestamp())
    starts[key] = (candle.start, start)
    return start


def open_candle(
    symbol: str, interval: Interval, start: datetime, price: Decimal, volume: Decimal
) -> Candle:
    return Candle(symbol, interval, start, price, price, price, price, volume)


class CandleBook:
    """The open candle of every (symbol, interval); `apply` returns those it closed."""

    def __init__(self) -> None:
        self.current: dict[tuple[str, Interval], Candle] = {}
        # The open candles' starts as epoch seconds (what `apply` compares on every
        # tick, without building a datetime per interval): kept with `current`.
        self._starts: dict[tuple[str, Interval], tuple[datetime, int]] = {}

    def apply(self, tick: Tick) -> list[Candle]:
        closed = []
        epoch = int(tick.timestamp.timestamp())
        current, starts = self.current, self._starts
        for interval, seconds in _INTERVAL_SECONDS:
            key = (tick.symbol, interval)
            start = epoch - epoch % seconds
            candle = current.get(key)
            if candle is None or start > _start_of(starts, key, candle):
                if candle is not None:
                    closed.append(replace(candle, closed=True))
                at = datetime.fromtimestamp(start, UTC)
                current[key] = open_candle(tick.symbol, interval, at, tick.price, tick.volume)
                starts[key] = (at, start)
            else:
                # A late tick (start < candle.start) still counts towards the open candle.
                current[key] = candle.add(tick.price, tick.volume)
        return closed

    def seed(self, minutes: Iterable[Candle], now: datetime) -> None:
        """Rebuild the open candles of the current periods from persisted minutes
        (after a restart), so a 1 h candle does not lose the minutes before it."""
        for minute in sorted(minutes, key=lambda c: c.start):
            for interval in Interval:
                if interval is Interval.ONE_MINUTE:
                    continue
                start = interval.floor(now)
                if minute.start < start:
                    continue
                key = (minute.symbol, interval)
                candle = self.current.get(key)
                if candle is None:
                    self.current[key] = replace(
                        minute, interval=interval, start=start, closed=False
                    )
                else:
                    self.current[key] = candle.merge(minute)

    def open_candle(self, symbol: str, interval: Interval) -> Candle | None:
        return self.current.get((symbol, interval))
