"""The in-memory index of active price alerts: per symbol, the thresholds ordered so
that a tick finds the crossed ones by binary search and removes exactly those. The
work per tick is O(log n) to find the boundary plus O(k) for the k alerts that fire,
whatever the number n of alerts waiting (bench/alerts.py measures it).

The index is only a filter: the store decides (a conditional update on the alert's
status) whether an alert popped here really fires, so a stale entry costs one
conditional update and nothing else."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class AlertCondition(StrEnum):
    ABOVE = "ABOVE"  # last price >= value
    BELOW = "BELOW"  # last price <= value
    # Signed: value > 0 fires when the 24 h change (percent) >= value, value < 0 when
    # it is <= value.
    PERCENT_CHANGE_24H = "PERCENT_CHANGE_24H"


@dataclass(frozen=True, slots=True)
class Watch:
    """What the index keeps of one active alert."""

    alert_id: str
    user_id: str
    symbol: str
    condition: AlertCondition
    value: Decimal

    @property
    def on_price(self) -> bool:
        return self.condition is not AlertCondition.PERCENT_CHANGE_24H

    @property
    def rising(self) -> bool:
        """Fires when the metric rises to the value (else when it falls to it)."""
        if self.condition is AlertCondition.PERCENT_CHANGE_24H:
            return self.value > 0
        return self.condition is AlertCondition.ABOVE


class Thresholds:
    """Thresholds on one metric that fire from one side: `rising` ones when the
    metric is >= the threshold, falling ones when it is <= the threshold.

    Kept sorted so the next to fire sit at the tail: rising thresholds descending
    (stored negated, ascending), falling ones ascending. A tick cuts the tail at the
    metric: nothing before the cut is looked at."""

    __slots__ = ("keys", "rising")

    def __init__(self, rising: bool) -> None:
        self.rising = rising
        self.keys: list[tuple[Decimal, str]] = []

    def _key(self, threshold: Decimal, alert_id: str) -> tuple[Decimal, str]:
        return (-threshold if self.rising else threshold, alert_id)

    def add(self, threshold: Decimal, alert_id: str) -> None:
        insort(self.keys, self._key(threshold, alert_id))

    def extend(self, entries: Iterable[tuple[Decimal, str]]) -> None:
        """Add many at once: one sort instead of one insertion each."""
        self.keys.extend(self._key(threshold, alert_id) for threshold, alert_id in entries)
        self.keys.sort()

    def remove(self, threshold: Decimal, alert_id: str) -> None:
        key = self._key(threshold, alert_id)
        i = bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            del self.keys[i]

    def pop_crossed(self, metric: Decimal) -> list[str]:
        """Remove and return the ids whose threshold the metric has reached."""
        # Crossed: rising when -threshold >= -metric, falling when threshold >= metric;
        # a 1-tuple sorts before every (same value, id) pair.
        cut = bisect_left(self.keys, (-metric if self.rising else metric,))
        if cut == len(self.keys):
            return []
        crossed = self.keys[cut:]
        del self.keys[cut:]
        return [alert_id for _, alert_id in crossed]

    def __len__(self) -> int:
        return len(self.keys)


class _Book:
    """One symbol's thresholds."""

    __slots__ = ("above", "below", "down", "up")

    def __init__(self) -> None:
        self.above = Thresholds(rising=True)  # ABOVE, on the price
        self.below = Thresholds(rising=False)  # BELOW, on the price
        self.up = Thresholds(rising=True)  # PERCENT_CHANGE_24H > 0
        self.down = Thresholds(rising=False)  # PERCENT_CHANGE_24H < 0

    def side(self, watch: Watch) -> Thresholds:
        if watch.on_price:
            return self.above if watch.rising else self.below
        return self.up if watch.rising else self.down

    def __len__(self) -> int:
        return len(self.above) + len(self.below) + len(self.up) + len(self.down)


class AlertIndex:
    def __init__(self, watches: Iterable[Watch] = ()) -> None:
        self._books: dict[str, _Book] = {}
        self._watches: dict[str, Watch] = {}
        # Built in bulk (a sort per list), so loading 100,000 alerts is fast.
        pending: dict[int, tuple[Thresholds, list[tuple[Decimal, str]]]] = {}
        for watch in watches:
            if watch.alert_id in self._watches:
                continue
            self._watches[watch.alert_id] = watch
            side = self._book(watch.symbol).side(watch)
            pending.setdefault(id(side), (side, []))[1].append((watch.value, watch.alert_id))
        for side, entries in pending.values():
            side.extend(entries)

    def _book(self, symbol: str) -> _Book:
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        return book

    def add(self, watch: Watch) -> None:
        """Idempotent: an alert already indexed is left as it is."""
        if watch.alert_id in self._watches:
            return
        self._watches[watch.alert_id] = watch
        self._book(watch.symbol).side(watch).add(watch.value, watch.alert_id)

    def remove(self, alert_id: str) -> Watch | None:
        """Idempotent: an unknown id is ignored."""
        watch = self._watches.pop(alert_id, None)
        if watch is not None:
            self._books[watch.symbol].side(watch).remove(watch.value, alert_id)
        return watch

    def pop_crossed(
        self, symbol: str, price: Decimal, change_percent: Callable[[], Decimal | None]
    ) -> list[Watch]:
        """Remove and return the alerts on `symbol` that a tick at `price` meets.
        `change_percent()` (the 24 h change, or None when unknown) is only called when
        the symbol has percent-change alerts."""
        book = self._books.get(symbol)
        if book is None:
            return []
        ids = book.above.pop_crossed(price) + book.below.pop_crossed(price)
        if book.up.keys or book.down.keys:
            percent = change_percent()
            if percent is not None:
                ids += book.up.pop_crossed(percent) + book.down.pop_crossed(percent)
        return [self._watches.pop(i) for i in ids]

    def get(self, alert_id: str) -> Watch | None:
        return self._watches.get(alert_id)

    def count(self, symbol: str | None = None) -> int:
        if symbol is None:
            return len(self._watches)
        book = self._books.get(symbol)
        return len(book) if book is not None else 0

    def __len__(self) -> int:
        return len(self._watches)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._watches
