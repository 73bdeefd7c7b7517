"""Market resolvers: assets, quotes and candles as the market service holds them
(schema/market.py maps them)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from cryptovault.events.hub import HubStream, HubSubscription
from cryptovault.market.assets import ASSETS, Asset, get_asset, resolve_symbols
from cryptovault.market.candles import Candle, Interval
from cryptovault.market.service import Quote, candle_topic, price_topic
from cryptovault.paging import Page

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


def assets(info: Info) -> list[Asset]:
    return list(ASSETS.values())


def asset(info: Info, symbol: str) -> Asset:
    return get_asset(symbol)


def price_of(info: Info, symbol: str) -> Quote | None:
    return info.context.services.market.quote(symbol)


def prices(info: Info, symbols: list[str] | None, now: datetime | None = None) -> list[Quote]:
    return info.context.services.market.quotes(resolve_symbols(symbols), now)


async def candles(
    info: Info, symbol: str, interval: Interval, first: int | None, after: str | None
) -> Page[Candle]:
    return await info.context.services.market.candles_page(symbol, interval, first, after)


def price_stream(info: Info, symbols: list[str] | None) -> HubStream[Quote]:
    """The quotes of `symbols` as they tick. The symbols are checked, and the hub
    subscribed, when the stream is first read (as a generator's body runs)."""
    hub = info.context.services.hub

    def open() -> HubSubscription:
        wanted = resolve_symbols(symbols)
        return hub.subscribe(*(price_topic(a.symbol) for a in wanted), maxsize=4 * len(wanted))

    return HubStream(open)


def candle_stream(info: Info, symbol: str, interval: Interval) -> HubStream[Candle]:
    """The open candle of `symbol` on every tick, and each candle as it closes."""
    hub = info.context.services.hub

    def open() -> HubSubscription:
        return hub.subscribe(candle_topic(get_asset(symbol).symbol, interval), maxsize=16)

    return HubStream(open)
