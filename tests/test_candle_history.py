"""Candles are aggregated in memory (no store write per tick) and closed ones are
persisted, so history and 24 h statistics survive a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from cryptovault.market.candles import Interval
from cryptovault.services import start_services
from tests.conftest import CommandCounter, make_settings, tick


async def test_ticks_within_a_minute_write_nothing(services, commands):
    now = datetime.now(UTC).replace(second=1, microsecond=0)
    services.market.is_leader = True
    try:
        services.market.apply(tick("XRP", "2.0000", "5", at=now))
        await services.market.flush()
        commands.reset()
        for i in range(50):
            services.market.apply(
                tick("XRP", f"2.{i:04d}", "5", at=now + timedelta(milliseconds=i))
            )
        await services.market.flush()
        assert commands.count == 0
    finally:
        services.market.is_leader = False


async def test_closed_candles_and_stats_survive_a_restart(store_server):
    settings = make_settings(store_server.url)
    counter = CommandCounter()
    first = await start_services(settings, feed=None, event_listeners=[counter])
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    try:
        first.market.is_leader = True
        for m, price in enumerate(["100.00", "105.00", "95.00", "101.00"]):
            first.market.apply(tick("LTC", price, "3", at=base + timedelta(minutes=m, seconds=5)))
        counter.reset()
        first.market.apply(tick("LTC", "102.00", "1", at=datetime.now(UTC)))
        # The background writer persists the closed candles: one bulk write.
        for _ in range(200):
            if "update" in counter.commands and not first.market._pending:
                break
            await asyncio.sleep(0.01)
        assert counter.commands.count("update") == 1
    finally:
        await first.close()

    second = await start_services(settings, feed=None)
    try:
        second.market.apply(tick("LTC", "103.00", "1", at=datetime.now(UTC)))
        quote = second.market.quote("LTC")
        assert quote is not None and quote.day is not None
        assert str(quote.day.high) == "105.00"
        assert str(quote.day.low) == "95.00"
        assert str(quote.day.open) == "100.00"
        page, _ = await second.market.candle_page("LTC", Interval.ONE_MINUTE, 10, None)
        assert [str(c.open) for c in page] == ["103.00", "101.00", "95.00", "105.00", "100.00"]
        assert [c.closed for c in page] == [False, True, True, True, True]
    finally:
        await second.store.client.drop_database(settings.mongodb_db)
        await second.close()


def test_open_candles_are_rebuilt_from_persisted_minutes():
    from cryptovault.market.candles import CandleBook

    hour = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    book = CandleBook()
    minutes = []
    for m, price in enumerate(["10", "12", "9", "11"]):
        minutes.extend(
            c for c in CandleBook().apply(tick("ETH", price, "1", at=hour + timedelta(minutes=m)))
        )
        scratch = CandleBook()
        scratch.apply(tick("ETH", price, "1", at=hour + timedelta(minutes=m)))
        minutes.append(scratch.open_candle("ETH", Interval.ONE_MINUTE))
    before_hour = CandleBook()
    before_hour.apply(tick("ETH", "50", "1", at=hour - timedelta(minutes=1)))
    minutes.append(before_hour.open_candle("ETH", Interval.ONE_MINUTE))
    book.seed(minutes, now=hour + timedelta(minutes=30))
    rebuilt = book.open_candle("ETH", Interval.ONE_HOUR)
    assert rebuilt is not None
    assert (rebuilt.open, rebuilt.high, rebuilt.low, rebuilt.close) == (10, 12, 9, 11)
    assert rebuilt.volume == 4 and rebuilt.start == hour
    fifteen = book.open_candle("ETH", Interval.FIFTEEN_MINUTES)
    assert fifteen is None  # 10:30's quarter has no minutes yet
