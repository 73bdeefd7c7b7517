"""Market data in the schema: assets, live prices, candles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Annotated, Any

import strawberry

from cryptovault.extensions.cost import cost
from cryptovault.market import assets as domain_assets
from cryptovault.market import candles as domain_candles
from cryptovault.market.assets import ASSETS, get_asset, resolve_symbols
from cryptovault.market.candles import Interval
from cryptovault.market.service import CANDLES, Quote
from cryptovault.resolvers import market as resolve
from cryptovault.resolvers.context import Info
from cryptovault.schema.enums import register_enum
from cryptovault.schema.pagination import AFTER, Connection, connection, first_argument
from cryptovault.schema.results import depends_on, shared_result
from cryptovault.schema.streams import shared_stream

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

    @classmethod
    def from_domain(cls, q: Quote) -> Price:
        t, day = q.tick, q.day
        return cls(
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

    @classmethod
    def from_domain(cls, a: domain_assets.Asset) -> Asset:
        return cls(
            symbol=a.symbol,
            name=a.name,
            precision=a.precision,
            quantity_increment=a.quantity_increment,
            price_increment=a.price_increment,
            min_size=a.min_size,
            min_notional=a.min_notional,
        )

    @strawberry.field(description="The latest price; null until the first tick arrives.")
    def price(self, info: Info) -> Price | None:
        q = resolve.price_of(info, self.symbol)
        return Price.from_domain(q) if q else None


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

    @classmethod
    def from_domain(cls, c: domain_candles.Candle) -> Candle:
        return cls(
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
        return [Asset.from_domain(a) for a in resolve.assets(info)]

    @strawberry.field(
        description="One asset by symbol (case-insensitive); unknown symbols are BAD_USER_INPUT."
    )
    def asset(
        self,
        info: Info,
        symbol: Symbol,
    ) -> Asset | None:
        return Asset.from_domain(resolve.asset(info, symbol))

    @strawberry.field(
        description="Latest prices, for the given symbols or every asset.",
        metadata={**cost(list_size=_symbols_count), **shared_result()},
    )
    def prices(
        self,
        info: Info,
        symbols: Symbols = None,
    ) -> list[Price]:
        market = info.context.services.market
        names = [a.symbol for a in resolve_symbols(symbols)]
        now = market.clock()
        # Read before the quotes (a tick, a closed minute, the 24 h window moving on
        # make the kept answer stale); the quotes are read at the same `now`.
        depends_on(info, partial(market.quotes_version, names), market.quotes_version(names, now))
        return [Price.from_domain(q) for q in resolve.prices(info, symbols, now)]

    @strawberry.field(
        description="Candles for one asset, newest first (the open one first).",
        metadata={**cost(max_page=CANDLES.maximum), **shared_result()},
    )
    async def candles(
        self,
        info: Info,
        symbol: Symbol,
        interval: CandleInterval,
        first: Annotated[int | None, first_argument(CANDLES)] = CANDLES.default,
        after: Annotated[str | None, AFTER] = None,
    ) -> Connection[Candle]:
        market = info.context.services.market
        symbol = get_asset(symbol).symbol
        # Read before the page: a tick during the read makes the kept answer stale.
        depends_on(info, partial(market.version, symbol), market.version(symbol))
        page = await resolve.candles(info, symbol, interval, first, after)
        return connection(page, Candle.from_domain)


@strawberry.type
class MarketSubscription:
    # Market streams are the same for every caller: one execution per event for all
    # subscribers; a slow reader gets the newest price per symbol (and the newest state
    # of each candle), not a backlog.
    @strawberry.subscription(
        description="Live prices: one event per tick per symbol.",
        metadata=shared_stream(coalesce_by=lambda price: price.symbol),
    )
    def prices(
        self,
        info: Info,
        symbols: Symbols = None,
    ) -> AsyncIterator[Price]:
        # A plain async iterator (events/hub.py HubStream): no generator per event
        # between the hub and the subscription.
        return resolve.price_stream(info, symbols).map(Price.from_domain)

    @strawberry.subscription(
        description="The open candle on every tick, then each candle once more when it closes.",
        metadata=shared_stream(coalesce_by=lambda candle: (candle.symbol, candle.open_time)),
    )
    def candles(
        self,
        info: Info,
        symbol: Symbol,
        interval: CandleInterval,
    ) -> AsyncIterator[Candle]:
        return resolve.candle_stream(info, symbol, interval).map(Candle.from_domain)
