"""Market data in the schema: assets, live prices, candles."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import strawberry

from cryptovault.extensions.cost import cost
from cryptovault.market.assets import ASSETS
from cryptovault.market.candles import Interval
from cryptovault.market.service import MAX_CANDLE_PAGE
from cryptovault.resolvers import market as resolve
from cryptovault.schema.context import Info
from cryptovault.schema.enums import register_enum
from cryptovault.schema.pagination import AFTER, Connection, first_argument
from cryptovault.schema.results import shared_result
from cryptovault.subscriptions.policy import shared_stream

# Registers the domain enum with the schema under its API name.
register_enum(
    Interval,
    name="CandleInterval",
    description="The time span of one candle.",
    values={
        "ONE_MINUTE": "1 minute.",
        "FIVE_MINUTES": "5 minutes.",
        "FIFTEEN_MINUTES": "15 minutes.",
        "ONE_HOUR": "1 hour.",
        "ONE_DAY": "1 day (UTC midnight to midnight).",
    },
)


@strawberry.type(description="The latest quote of an asset, with its rolling 24 h statistics.")
class Price:
    symbol: str = strawberry.field(description='The asset, e.g. "BTC".')
    price: Decimal = strawberry.field(description="Last traded price in USD.")
    bid: Decimal = strawberry.field(description="Best bid: what a market sell would get.")
    ask: Decimal = strawberry.field(description="Best ask: what a market buy would pay.")
    change24h: Decimal | None = strawberry.field(description="Price change over 24 hours (USD).")
    change_percent24h: Decimal | None = strawberry.field(
        description="Price change over 24 hours, in percent (two decimals)."
    )
    high24h: Decimal | None = strawberry.field(
        description="The highest last price over the past 24 hours (USD); null until known."
    )
    low24h: Decimal | None = strawberry.field(
        description="The lowest last price over the past 24 hours (USD); null until known."
    )
    volume24h: Decimal | None = strawberry.field(description="Base units traded in 24 hours.")
    timestamp: datetime = strawberry.field(description="When the price was observed.")


@strawberry.type(description="A tradable crypto asset, quoted in USD.")
class Asset:
    symbol: str = strawberry.field(description='The ticker used everywhere else, e.g. "BTC".')
    name: str = strawberry.field(description='The display name, e.g. "Bitcoin".')
    precision: int = strawberry.field(description="Decimal places of a quantity.")
    quantity_increment: Decimal = strawberry.field(
        description="Quantities must be multiples of this."
    )
    price_increment: Decimal = strawberry.field(description="Prices must be multiples of this.")
    min_size: Decimal = strawberry.field(description="Smallest order quantity.")
    min_notional: Decimal = strawberry.field(description="Smallest order value in USD.")

    @strawberry.field(description="The latest price; null until the first tick arrives.")
    def price(self, info: Info) -> Price | None:
        return resolve.price_of(info, self.symbol)


@strawberry.type(description="Open, high, low, close and volume over one interval.")
class Candle:
    symbol: str = strawberry.field(description='The asset, e.g. "BTC".')
    interval: Interval = strawberry.field(description="The span the candle covers.")
    open_time: datetime = strawberry.field(description="Start of the interval (inclusive).")
    close_time: datetime = strawberry.field(
        description="End of the interval (exclusive): openTime + the interval."
    )
    open: Decimal = strawberry.field(description="The first last price in the interval (USD).")
    high: Decimal = strawberry.field(description="The highest last price in the interval (USD).")
    low: Decimal = strawberry.field(description="The lowest last price in the interval (USD).")
    close: Decimal = strawberry.field(
        description="The last price at the interval's end, or now while it runs (USD)."
    )
    volume: Decimal = strawberry.field(description="Base units traded in the interval.")
    closed: bool = strawberry.field(description="False while the interval is still running.")


CandleConnection = Connection[Candle]


def _symbols_count(args: Mapping[str, Any]) -> int:
    symbols = args.get("symbols")
    return len(symbols) if isinstance(symbols, list) else len(ASSETS)


# Arguments shared by the queries and the subscriptions.
Symbol = Annotated[
    str,
    strawberry.argument(
        description='An asset symbol, e.g. "BTC" (case-insensitive); unknown '
        "symbols are BAD_USER_INPUT."
    ),
]
Symbols = Annotated[
    list[str] | None,
    strawberry.argument(
        description='Asset symbols, e.g. ["BTC", "ETH"]; omit for every asset. '
        "Unknown symbols and an empty list are BAD_USER_INPUT."
    ),
]
CandleInterval = Annotated[Interval, strawberry.argument(description="The candle span.")]


@strawberry.type
class MarketQuery:
    @strawberry.field(description="Every tradable asset.", metadata=cost(list_size=len(ASSETS)))
    def assets(self, info: Info) -> list[Asset]:
        return resolve.assets(info)

    @strawberry.field(
        description="One asset by symbol (case-insensitive); unknown symbols are BAD_USER_INPUT."
    )
    def asset(
        self,
        info: Info,
        symbol: Symbol,
    ) -> Asset | None:
        return resolve.asset(info, symbol)

    @strawberry.field(
        description="Latest prices, for the given symbols or every asset.",
        metadata=cost(list_size=_symbols_count),
    )
    def prices(
        self,
        info: Info,
        symbols: Symbols = None,
    ) -> list[Price]:
        return resolve.prices(info, symbols)

    @strawberry.field(
        description="Candles for one asset, newest first (the open one first).",
        metadata={**cost(max_page=MAX_CANDLE_PAGE), **shared_result()},
    )
    async def candles(
        self,
        info: Info,
        symbol: Symbol,
        interval: CandleInterval,
        first: Annotated[int | None, first_argument(MAX_CANDLE_PAGE)] = 100,
        after: Annotated[str | None, AFTER] = None,
    ) -> Connection[Candle]:
        return await resolve.candles(info, symbol, interval, first, after)


@strawberry.type
class MarketSubscription:
    # Market streams are the same for every caller: one execution per event for all
    # subscribers; a slow reader gets the newest price per symbol (and the newest state
    # of each candle), not a backlog.
    @strawberry.subscription(
        description="Live prices: one event per tick per symbol.",
        metadata=shared_stream(coalesce_by=lambda price: price.symbol),
    )
    async def prices(
        self,
        info: Info,
        symbols: Symbols = None,
    ) -> AsyncGenerator[Price]:
        async for price in resolve.price_stream(info, symbols):
            yield price

    @strawberry.subscription(
        description="The open candle on every tick, then each candle once more when it closes.",
        metadata=shared_stream(coalesce_by=lambda candle: (candle.symbol, candle.open_time)),
    )
    async def candles(
        self,
        info: Info,
        symbol: Symbol,
        interval: CandleInterval,
    ) -> AsyncGenerator[Candle]:
        async for candle in resolve.candle_stream(info, symbol, interval):
            yield candle
