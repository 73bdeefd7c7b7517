"""Coinbase Advanced Trade public `ticker` channel over WebSocket, with reconnect and
exponential back-off. The parser is tested on recorded messages (tests/data/)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import orjson
import websockets

from cryptovault.market.assets import ASSETS
from cryptovault.market.feeds import Emit
from cryptovault.market.ticks import Tick

log = logging.getLogger(__name__)

COINBASE_WS_URL = "wss://advanced-trade-ws.coinbase.com"


class CoinbaseTickerParser:
    """Turns `ticker` channel messages into ticks. Coinbase reports a rolling 24 h
    volume, not trade sizes: a tick's volume is the increase of that figure since the
    previous message (zero when the window rolls over)."""

    def __init__(self) -> None:
        self._last_volume: dict[str, Decimal] = {}

    def parse(self, raw: str | bytes) -> list[Tick]:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("coinbase: dropped a message that is not JSON")
            return []
        if not isinstance(message, dict) or message.get("channel") != "ticker":
            return []
        ticks = []
        for event in message.get("events") or []:
            for ticker in event.get("tickers") or []:
                tick = self._tick(ticker, message.get("timestamp"), message.get("sequence_num", 0))
                if tick is not None:
                    ticks.append(tick)
        return ticks

    def _tick(self, ticker: dict, timestamp: object, seq: object) -> Tick | None:
        product = str(ticker.get("product_id", ""))
        base, _, quote_ccy = product.partition("-")
        asset = ASSETS.get(base)
        if asset is None or quote_ccy != "USD":
            return None
        try:
            price = Decimal(ticker["price"])
            bid = Decimal(ticker.get("best_bid") or ticker["price"])
            ask = Decimal(ticker.get("best_ask") or ticker["price"])
            volume_24h = Decimal(ticker.get("volume_24_h") or "0")
        except (KeyError, InvalidOperation, TypeError):
            log.warning("coinbase: dropped a malformed ticker", extra={"product": product})
            return None
        if price <= 0 or bid <= 0 or ask < bid:
            return None
        previous = self._last_volume.get(asset.symbol)
        self._last_volume[asset.symbol] = volume_24h
        volume = volume_24h - previous if previous is not None and volume_24h > previous else 0
        ts = parse_timestamp(timestamp)
        return Tick(
            symbol=asset.symbol,
            price=asset.floor_price(price),
            bid=asset.floor_price(bid),
            ask=asset.ceil_price(ask),
            volume=asset.floor_quantity(Decimal(volume)),
            timestamp=ts,
            source="coinbase",
            seq=int(seq) if isinstance(seq, int) else 0,
        )


def parse_timestamp(value: object) -> datetime:
    """Coinbase sends RFC 3339 with up to nanoseconds ("...:37.167359596Z");
    Python keeps microseconds."""
    text = str(value or "").strip().removesuffix("Z")
    head, dot, fraction = text.partition(".")
    if dot:
        digits = "".join(ch for ch in fraction if ch.isdigit())[:6]
        head = f"{head}.{digits}" if digits else head
    try:
        parsed = datetime.fromisoformat(head)
    except ValueError:
        return datetime.now(UTC)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def backoff_delays(base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None):
    """Exponential back-off with full jitter: 0..min(cap, base * 2**n)."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap, base * 2**attempt))
        attempt += 1


class CoinbaseFeed:
    name = "coinbase"

    def __init__(
        self,
        url: str = COINBASE_WS_URL,
        symbols: Iterable[str] | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = url
        self.symbols = list(symbols or ASSETS)
        self.max_backoff = max_backoff
        self.connections = 0

    def subscribe_message(self) -> bytes:
        return orjson.dumps(
            {
                "type": "subscribe",
                "product_ids": [f"{s}-USD" for s in self.symbols],
                "channel": "ticker",
            }
        )

    async def run(self, emit: Emit) -> None:
        delays = backoff_delays(cap=self.max_backoff)
        while True:
            parser = CoinbaseTickerParser()
            try:
                async with websockets.connect(self.url, open_timeout=10, max_size=2**22) as ws:
                    self.connections += 1
                    await ws.send(self.subscribe_message().decode())
                    log.info("coinbase: connected", extra={"url": self.url})
                    delays = backoff_delays(cap=self.max_backoff)  # healthy again: reset
                    async for raw in ws:
                        for tick in parser.parse(raw):
                            await emit(tick)
            except asyncio.CancelledError:
                raise
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                delay = next(delays)
                log.warning(
                    "coinbase: connection lost, reconnecting",
                    extra={"error": repr(exc), "retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)
                continue
            # The server closed the stream cleanly: reconnect after a short pause too.
            await asyncio.sleep(next(delays))
