"""CandleBook.apply against the plain definition of a candle: the open candle of each
interval starts at the tick's time floored to the interval; a later period closes it;
a late tick still counts towards the open candle."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cryptovault.market.candles import Candle, CandleBook, Interval, open_candle
from cryptovault.market.ticks import Tick


def _reference(book: dict, tick: Tick) -> list[Candle]:
    closed = []
    for interval in Interval:
        key = (tick.symbol, interval)
        start = interval.floor(tick.timestamp)
        candle = book.get(key)
        if candle is None or start > candle.start:
            if candle is not None:
                closed.append(replace(candle, closed=True))
            book[key] = open_candle(tick.symbol, interval, start, tick.price, tick.volume)
        else:
            book[key] = replace(
                candle,
                high=max(candle.high, tick.price),
                low=min(candle.low, tick.price),
                close=tick.price,
                volume=candle.volume + tick.volume,
                ticks=candle.ticks + 1,
            )
    return closed


def _tick(at: datetime, price: str) -> Tick:
    return Tick("BTC", Decimal(price), Decimal(price), Decimal(price), Decimal("0.5"), at)


def test_apply_matches_the_definition_across_period_ends_and_late_ticks():
    rng = random.Random(16)
    at = datetime(2026, 12, 5, 23, 58, 30, 250_000, tzinfo=UTC)
    book, reference = CandleBook(), {}
    for _ in range(3_000):
        # Mostly forward by up to 20 s (crossing minutes, hours and the day), now and
        # then a late tick up to 90 s in the past.
        step = rng.uniform(-90, 0) if rng.random() < 0.1 else rng.uniform(0, 20)
        tick = _tick(
            at + timedelta(seconds=step), f"{rng.randint(40_000, 60_000)}.{rng.randint(0, 99):02d}"
        )
        if step > 0:
            at = tick.timestamp
        assert book.apply(tick) == _reference(reference, tick)
        assert book.current == reference
    assert any(c.ticks > 1 for c in book.current.values())


def test_a_candle_put_in_directly_is_compared_by_its_own_start():
    """`seed` (and tests) set open candles without apply: the next tick compares
    against that candle's start, not a start remembered from before."""
    book = CandleBook()
    minute = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    book.apply(_tick(minute + timedelta(seconds=5), "100"))
    # An open candle of a later minute replaces the one apply made.
    later = minute + timedelta(minutes=2)
    book.current[("BTC", Interval.ONE_MINUTE)] = open_candle(
        "BTC", Interval.ONE_MINUTE, later, Decimal(200), Decimal(1)
    )
    # A tick of the minute between is late for that candle: it joins it, closes nothing.
    closed = book.apply(_tick(minute + timedelta(minutes=1, seconds=1), "150"))
    assert closed == []
    candle = book.open_candle("BTC", Interval.ONE_MINUTE)
    assert candle is not None
    assert (candle.start, candle.low, candle.close, candle.ticks) == (later, 150, 150, 2)
