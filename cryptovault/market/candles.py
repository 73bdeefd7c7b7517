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
        return replace(
            self,
            high=max(self.high, price),
            low=min(self.low, price),
            close=price,
            volume=self.volume + volume,
            ticks=self.ticks + ticks,
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


def open_candle(symbol: str, interval: Interval, start: datetime, price: Decimal, volume: Decimal) -> Candle:
    return Candle(symbol, interval, start, price, price, price, price, volume)


class CandleBook:
    """The open candle of every (symbol, interval); `apply` returns those it closed."""

    def __init__(self) -> None:
        self.current: dict[tuple[str, Interval], Candle] = {}

    def apply(self, tick: Tick) -> list[Candle]:
        closed = []
        for interval in Interval:
            key = (tick.symbol, interval)
            start = interval.floor(tick.timestamp)
            candle = self.current.get(key)
            if candle is None or start > candle.start:
                if candle is not None:
                    closed.append(replace(candle, closed=True))
                self.current[key] = open_candle(tick.symbol, interval, start, tick.price, tick.volume)
            else:
                # A late tick (start < candle.start) still counts towards the open candle.
                self.current[key] = candle.add(tick.price, tick.volume)
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
                    self.current[key] = replace(minute, interval=interval, start=start, closed=False)
                else:
                    self.current[key] = candle.merge(minute)

    def open_candle(self, symbol: str, interval: Interval) -> Candle | None:
        return self.current.get((symbol, interval))
