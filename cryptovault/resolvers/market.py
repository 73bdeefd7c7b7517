"""Market resolvers: thin mapping between the market service and schema types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from cryptovault.errors import BadUserInput
from cryptovault.market.assets import ASSETS, Asset, get_asset, resolve_symbols
from cryptovault.market.candles import Candle, Interval
from cryptovault.market.service import (
    MAX_CANDLE_PAGE,
    Quote,
    candle_topic,
    price_topic,
)
from cryptovault.schema import market as types
from cryptovault.schema.pagination import (
    Connection,
    check_page_size,
    connection,
    decode_cursor,
    encode_cursor,
)
from cryptovault.schema.results import depends_on

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


def to_price(q: Quote) -> types.Price:
    t, day = q.tick, q.day
    return types.Price(
        symbol=t.symbol,
        price=t.price,
        bid=t.bid,
        ask=t.ask,
        change24h=day.change(t.price) if day else None,
        change_percent24h=day.change_percent(t.price) if day else None,
        high24h=day.high if day else None,
        low24h=day.low if day else None,
        volume24h=day.volume if day else None,
        timestamp=t.timestamp,
    )


def to_asset(a: Asset) -> types.Asset:
    return types.Asset(
        symbol=a.symbol,
        name=a.name,
        precision=a.precision,
        quantity_increment=a.quantity_increment,
        price_increment=a.price_increment,
        min_size=a.min_size,
        min_notional=a.min_notional,
    )


def to_candle(c: Candle) -> types.Candle:
    return types.Candle(
        symbol=c.symbol,
        interval=c.interval,
        open_time=c.start,
        close_time=c.end,
        open=c.open,
        high=c.high,
        low=c.low,
        close=c.close,
        volume=c.volume,
        closed=c.closed,
    )


def assets(info: Info) -> list[types.Asset]:
    return [to_asset(a) for a in ASSETS.values()]


def asset(info: Info, symbol: str) -> types.Asset:
    return to_asset(get_asset(symbol))


def price_of(info: Info, symbol: str) -> types.Price | None:
    q = info.context.services.market.quote(symbol)
    return to_price(q) if q else None


def prices(info: Info, symbols: list[str] | None) -> list[types.Price]:
    market = info.context.services.market
    return [to_price(q) for q in market.quotes(resolve_symbols(symbols))]


async def candles(
    info: Info, symbol: str, interval: Interval, first: int | None, after: str | None
) -> Connection[types.Candle]:
    a = get_asset(symbol)
    size = check_page_size(first, 100, MAX_CANDLE_PAGE)
    before = None
    if after is not None:
        raw = decode_cursor("candle", after)
        if not raw.isdigit():
            raise BadUserInput("Invalid cursor", cursor=after)
        before = datetime.fromtimestamp(int(raw), UTC)
    market = info.context.services.market
    # Read before the page: a tick during the read makes the kept answer stale.
    depends_on(info, partial(market.version, a.symbol), market.version(a.symbol))
    page, more = await market.candle_page(a.symbol, interval, size, before)
    previous = False
    if before is not None:
        # Before the cursor's candle: the open candle or a stored one that new.
        newest, _ = await market.candle_page(a.symbol, interval, 1, None)
        previous = bool(newest) and _aware(newest[0].start) >= before
    return connection(
        page,
        lambda c: encode_cursor("candle", str(int(c.start.timestamp()))),
        to_candle,
        has_next=more,
        has_previous=previous,
    )


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


async def price_stream(info: Info, symbols: list[str] | None) -> AsyncIterator[types.Price]:
    wanted = resolve_symbols(symbols)
    hub = info.context.services.hub
    with hub.subscribe(*(price_topic(a.symbol) for a in wanted), maxsize=4 * len(wanted)) as sub:
        async for quote in sub:
            yield to_price(quote)


async def candle_stream(info: Info, symbol: str, interval: Interval) -> AsyncIterator[types.Candle]:
    a = get_asset(symbol)
    with info.context.services.hub.subscribe(candle_topic(a.symbol, interval), maxsize=16) as sub:
        async for candle in sub:
            yield to_candle(candle)
