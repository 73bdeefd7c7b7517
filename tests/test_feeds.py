"""Price feeds: the simulated walk, CSV replay, and the Coinbase adapter (its parser on
recorded messages, its reconnect loop against a local WebSocket server)."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import websockets

from cryptovault.market.assets import ASSETS
from cryptovault.market.feeds.coinbase import (
    CoinbaseFeed,
    CoinbaseTickerParser,
    backoff_delays,
    parse_timestamp,
)
from cryptovault.market.feeds.replay import ReplayError, ReplayFeed
from cryptovault.market.feeds.simulated import SimulatedFeed
from cryptovault.market.ticks import Tick

RECORDED = Path(__file__).parent / "data" / "coinbase_ticker.jsonl"


def test_simulated_feed_is_reproducible_with_a_seed_and_differs_without():
    a, b, c = SimulatedFeed(seed=42), SimulatedFeed(seed=42), SimulatedFeed(seed=43)
    run_a = [t.price for _ in range(50) for t in a.step()]
    run_b = [t.price for _ in range(50) for t in b.step()]
    run_c = [t.price for _ in range(50) for t in c.step()]
    assert run_a == run_b
    assert run_a != run_c


def test_simulated_ticks_respect_increments_and_spread():
    feed = SimulatedFeed(seed=1)
    for _ in range(200):
        for t in feed.step():
            asset = ASSETS[t.symbol]
            assert isinstance(t.price, Decimal)
            assert t.price % asset.price_increment == 0
            assert t.bid % asset.price_increment == 0 and t.ask % asset.price_increment == 0
            assert t.volume % asset.quantity_increment == 0
            assert t.bid < t.ask
            assert t.bid <= t.price <= t.ask


def test_simulated_volatility_is_realistic():
    # One simulated day of one-minute steps: BTC's daily moves should look like
    # ~55% annualised volatility (daily sigma ~2.9%), not like a random toy.
    feed = SimulatedFeed(interval_ms=60_000, seed=3, assets=[ASSETS["BTC"]])
    closes = []
    for _day in range(60):
        for _ in range(1440):
            (t,) = feed.step()
        closes.append(t.price)
    returns = [float(b / a - 1) for a, b in itertools.pairwise(closes)]
    mean = sum(returns) / len(returns)
    sigma = (sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)) ** 0.5
    assert 0.015 < sigma < 0.045


async def test_simulated_feed_emits_every_asset_each_interval():
    feed = SimulatedFeed(interval_ms=10, seed=5)
    got: list[Tick] = []

    async def emit(t: Tick) -> None:
        got.append(t)

    task = asyncio.create_task(feed.run(emit))
    while len(got) < 3 * len(ASSETS):
        await asyncio.sleep(0.005)
    task.cancel()
    first = got[: len(ASSETS)]
    assert {t.symbol for t in first} == set(ASSETS)


async def test_replay_feed_plays_rows_in_order_at_speed(tmp_path):
    csv = tmp_path / "prices.csv"
    csv.write_text(
        "timestamp,symbol,price,volume\n"
        "2024-01-01T00:00:00Z,BTC,42000.5,0.5\n"
        "2024-01-01T00:00:01Z,eth,2300.25,\n"
        "1704067202,BTC,42010.00,1.25\n"
    )
    got: list[Tick] = []

    async def emit(t: Tick) -> None:
        got.append(t)

    loop = asyncio.get_running_loop()
    start = loop.time()
    await ReplayFeed(csv, speed=100).run(emit)
    elapsed = loop.time() - start
    assert [(t.symbol, str(t.price), str(t.volume)) for t in got] == [
        ("BTC", "42000.50", "0.50000000"),
        ("ETH", "2300.25", "0E-8"),
        ("BTC", "42010.00", "1.25000000"),
    ]
    assert elapsed >= 0.02  # two seconds of data at 100x


@pytest.mark.parametrize(
    "row, message",
    [
        ("2024-01-01T00:00:00Z,NOPE,1", "unknown symbol"),
        ("2024-01-01T00:00:00Z,BTC,abc", "prices.csv:2"),
        ("2024-01-01T00:00:00Z,BTC", "expected timestamp"),
        ("2024-01-01T00:00:00Z,BTC,-5", "price must be > 0"),
    ],
)
async def test_replay_feed_rejects_bad_rows_with_their_line(tmp_path, row, message):
    csv = tmp_path / "prices.csv"
    csv.write_text(f"timestamp,symbol,price\n{row}\n")

    async def emit(t: Tick) -> None:
        pass

    with pytest.raises(ReplayError, match=message):
        await ReplayFeed(csv).run(emit)


def test_coinbase_parser_on_recorded_messages():
    parser = CoinbaseTickerParser()
    ticks = [t for line in RECORDED.read_text().splitlines() for t in parser.parse(line)]
    assert [(t.symbol, str(t.price), str(t.bid), str(t.ask)) for t in ticks] == [
        ("BTC", "91342.37", "91342.36", "91342.37"),
        ("ETH", "3041.58", "3041.57", "3041.58"),
        ("BTC", "91345.01", "91345.00", "91345.01"),
        ("SOL", "138.47", "138.47", "138.48"),
        ("BTC", "91340.00", "91339.99", "91340.00"),
    ]
    # Volume: the increase of the 24 h figure between two messages; none on the
    # first message of a product and none when the window rolls down.
    assert [str(t.volume) for t in ticks if t.symbol == "BTC"] == ["0E-8", "0.10000000", "0E-8"]
    assert ticks[0].timestamp == datetime(2026, 11, 20, 14, 2, 11, 410923, tzinfo=UTC)
    assert all(t.source == "coinbase" for t in ticks)


def test_coinbase_parser_ignores_garbage():
    parser = CoinbaseTickerParser()
    assert parser.parse(b"not json") == []
    assert parser.parse("[1, 2]") == []
    assert (
        parser.parse('{"channel": "ticker", "events": [{"tickers": [{"product_id": "BTC-USD"}]}]}')
        == []
    )


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("2026-11-20T14:02:11.410923066Z", datetime(2026, 11, 20, 14, 2, 11, 410923, tzinfo=UTC)),
        ("2026-11-20T14:02:13Z", datetime(2026, 11, 20, 14, 2, 13, tzinfo=UTC)),
        ("2026-11-20T14:02:13.2Z", datetime(2026, 11, 20, 14, 2, 13, 200000, tzinfo=UTC)),
    ],
)
def test_coinbase_timestamps(raw, expected):
    assert parse_timestamp(raw) == expected


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    delays = backoff_delays(base=0.5, cap=8, rng=random.Random(1))
    values = [next(delays) for _ in range(12)]
    for n, value in enumerate(values):
        assert 0 <= value <= min(8, 0.5 * 2**n)
    assert max(values[6:]) > 2  # grew beyond the base


async def test_coinbase_feed_subscribes_and_reconnects_after_a_drop():
    """A local server plays the recorded messages, drops the first connection
    abruptly, and serves again: the feed must resubscribe and keep emitting."""
    lines = RECORDED.read_text().splitlines()
    subscriptions: list[dict] = []
    connections = 0
    finished = asyncio.Event()

    async def handler(ws) -> None:
        nonlocal connections
        connections += 1
        subscriptions.append(orjson.loads(await ws.recv()))
        for line in lines[:4]:
            await ws.send(line)
        if connections == 1:
            ws.transport.abort()  # an abrupt network failure, no close frame
            return
        await finished.wait()

    got: list[Tick] = []

    async def emit(t: Tick) -> None:
        got.append(t)

    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        feed = CoinbaseFeed(url=f"ws://127.0.0.1:{port}", symbols=["BTC", "ETH"], max_backoff=0.05)
        task = asyncio.create_task(feed.run(emit))
        try:
            async with asyncio.timeout(5):
                while len(got) < 6:
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            finished.set()
    assert connections == 2
    assert subscriptions[0] == {
        "type": "subscribe",
        "product_ids": ["BTC-USD", "ETH-USD"],
        "channel": "ticker",
    }
    assert [t.symbol for t in got] == ["BTC", "ETH", "BTC"] * 2
