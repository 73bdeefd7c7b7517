"""Rolling 24 h statistics per asset, computed from closed one-minute candles plus the
open one, so memory is bounded (1,440 minutes per asset) whatever the tick rate.

The window holds the closed minutes that started at most 24 h ago: it moves by whole
minutes, so what `stats` answers changes only with the open candle, a closed minute
added, or `window_start(now)` (the window's first minute) moving on. `version(now)`
names the last two: an answer kept while it is unchanged (schema.results) is exact.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from cryptovault.market.candles import Candle

WINDOW = timedelta(hours=24)
_MINUTE = timedelta(minutes=1)
MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class DayStats:
    open: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal

    def change(self, last: Decimal) -> Decimal:
        return last - self.open

    def change_percent(self, last: Decimal) -> Decimal:
        if not self.open:
            return Decimal(0)
        return ((last - self.open) / self.open * 100).quantize(Decimal("0.01"))


def window_start(now: datetime) -> datetime:
    """The first minute of the window at `now`: the earliest closed minute that started
    at most 24 h before `now` (minutes start on whole minutes)."""
    since = now - WINDOW
    start = since.replace(second=0, microsecond=0)
    return start if start == since else start + timedelta(minutes=1)


class RollingStats:
    def __init__(self) -> None:
        self._minutes: dict[str, deque[Candle]] = {}
        # (symbol) -> (window start it was computed for, aggregate of closed minutes)
        self._cache: dict[str, tuple[datetime, DayStats | None]] = {}
        # Bumped by every closed minute added (any symbol).
        self._added = 0
        # The last window's start and the span of `now` it is the start for (`version`).
        self._window: tuple[datetime, datetime, datetime] | None = None

    def version(self, now: datetime) -> tuple[int, datetime]:
        """Changes whenever the closed minutes `stats(..., now)` aggregates may have."""
        bounds = self._window
        if bounds is None or not bounds[0] < now <= bounds[1]:
            start = window_start(now)
            # The window starts at `start` for every `now` in (start + WINDOW - 1 minute,
            # start + WINDOW]: `now - WINDOW` rounds up to the minute `start`.
            bounds = self._window = (start + WINDOW - _MINUTE, start + WINDOW, start)
        return self._added, bounds[2]

    def add_closed_minute(self, candle: Candle) -> None:
        minutes = self._minutes.setdefault(candle.symbol, deque(maxlen=MINUTES))
        if minutes and candle.start <= minutes[-1].start:
            return  # already have it (seeded from the store, or replayed)
        minutes.append(candle)
        self._added += 1
        self._cache.pop(candle.symbol, None)

    def _closed_aggregate(self, symbol: str, since: datetime) -> DayStats | None:
        cached = self._cache.get(symbol)
        # Recomputed once per minute at most: when the window's first minute moves on.
        if cached is not None and cached[0] == since:
            return cached[1]
        window = [c for c in self._minutes.get(symbol, ()) if c.start >= since]
        result = None
        if window:
            result = DayStats(
                open=window[0].open,
                high=max(c.high for c in window),
                low=min(c.low for c in window),
                volume=sum((c.volume for c in window), Decimal(0)),
            )
        self._cache[symbol] = (since, result)
        return result

    def stats(self, symbol: str, current: Candle | None, now: datetime) -> DayStats | None:
        closed = self._closed_aggregate(symbol, window_start(now))
        if closed is None:
            if current is None:
                return None
            return DayStats(current.open, current.high, current.low, current.volume)
        if current is None:
            return closed
        return DayStats(
            open=closed.open,
            high=max(closed.high, current.high),
            low=min(closed.low, current.low),
            volume=closed.volume + current.volume,
        )
