"""The viewer's portfolio in the schema: valuation, P&L, holdings (with the trades that
built them), performance history, and the live `portfolio` subscription."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import strawberry

from cryptovault.extensions.cost import cost
from cryptovault.market.assets import ASSETS
from cryptovault.portfolio.performance import CENT, HUNDRED
from cryptovault.portfolio.service import MAX_POINTS, History, HistoryRange
from cryptovault.portfolio.valuation import PortfolioValue
from cryptovault.resolvers import portfolio as resolve
from cryptovault.resolvers.context import Info
from cryptovault.schema.enums import register_enum
from cryptovault.schema.pagination import AFTER, Connection, connection, first_argument
from cryptovault.schema.permissions import (
    PORTFOLIO_READ,
    PRIVATE_STREAM_ENDS,
)
from cryptovault.schema.trading import Trade
from cryptovault.trading.queries import HOLDING_TRADES

register_enum(
    HistoryRange,
    name="HistoryRange",
    description="A period ending now: the last 24 hours, 7 days, 30 days, 365 days, or "
    "everything since the first snapshot.",
    values={
        "DAY": "The last 24 hours.",
        "WEEK": "The last 7 days.",
        "MONTH": "The last 30 days.",
        "YEAR": "The last 365 days.",
        "ALL": "Everything since the account's first snapshot.",
    },
)


@strawberry.type(description="One asset held, valued at the current bid.")
class Holding:
    asset: str = strawberry.field(description='The asset symbol, e.g. "BTC".')
    quantity: Decimal = strawberry.field(description="available + held.")
    available: Decimal = strawberry.field(description="Free to sell now.")
    held: Decimal = strawberry.field(description="Reserved by open sell orders.")
    average_cost: Decimal | None = strawberry.field(
        description="Weighted average cost per unit, fees included (USD); null when the "
        "units came without a price (an admin credit)."
    )
    cost_basis: Decimal = strawberry.field(description="What the units held cost (USD).")
    price: Decimal | None = strawberry.field(
        description="The bid used to value the holding; null until the asset has a price."
    )
    market_value: Decimal | None = strawberry.field(description="quantity x bid (USD).")
    unrealized_pnl: Decimal | None = strawberry.field(description="marketValue - costBasis.")
    unrealized_pnl_percent: Decimal | None = strawberry.field(
        description="unrealizedPnl / costBasis x 100; null without a cost."
    )
    allocation_percent: Decimal | None = strawberry.field(
        description="marketValue / totalValue x 100."
    )
    day_change: Decimal | None = strawberry.field(
        description="quantity x the last price's change over 24 hours (USD)."
    )
    user_id: strawberry.Private[str]

    @strawberry.field(
        description="The viewer's trades of this asset, newest first: the fills that built "
        "the holding, each with its ledger entries.",
        metadata=cost(max_page=HOLDING_TRADES.maximum),
    )
    async def trades(
        self,
        info: Info,
        first: Annotated[int | None, first_argument(HOLDING_TRADES)] = HOLDING_TRADES.default,
        after: Annotated[str | None, AFTER] = None,
    ) -> Connection[Trade]:
        page = await resolve.holding_trades(info, self.asset, first, after)
        return connection(page, Trade.from_domain)


@strawberry.type(description="The portfolio's value at one moment.")
class PortfolioPoint:
    at: datetime = strawberry.field(
        description="When the value was taken (a snapshot, or now for the last point)."
    )
    value: Decimal = strawberry.field(description="Total value (USD).")
    net_flows: Decimal = strawberry.field(
        description="Deposits and adjustments received up to then (USD, cumulative)."
    )


def _points_size(args: Mapping[str, Any]) -> int:
    limit = args.get("limit")
    return limit if isinstance(limit, int) and 0 < limit <= MAX_POINTS else 100


@strawberry.type(
    description="Performance over a period, from snapshots taken every "
    "SNAPSHOT_INTERVAL_MINUTES and after every trade, plus the live value."
)
class PortfolioHistory:
    start: datetime = strawberry.field(name="from", description="The period's start.")
    end: datetime = strawberry.field(name="to", description="The period's end (now for a range).")
    start_value: Decimal | None = strawberry.field(
        description="The value the period starts from (the last snapshot at or before `from`, "
        "else the first in the period)."
    )
    end_value: Decimal | None = strawberry.field(
        description="The value at `to` (the live value when `to` is now); null "
        "without any value in the period."
    )
    net_flows: Decimal = strawberry.field(
        description="Deposits and adjustments within the period (USD): not return."
    )
    profit: Decimal | None = strawberry.field(description="endValue - startValue - netFlows (USD).")
    time_weighted_return: Decimal | None = strawberry.field(
        description="Percent, deposits and adjustments excluded: the product over "
        "consecutive points of (value - flows in between) / previous value, minus 1."
    )
    all_points: strawberry.Private[list[PortfolioPoint]]

    @classmethod
    def from_domain(cls, history: History) -> PortfolioHistory:
        start, end = history.start_value, history.end_value
        twr = history.time_weighted_return
        return cls(
            start=history.start,
            end=history.end,
            start_value=start,
            end_value=end,
            net_flows=history.net_flows,
            profit=(end - start - history.net_flows)
            if start is not None and end is not None
            else None,
            time_weighted_return=(twr * HUNDRED).quantize(CENT) if twr is not None else None,
            all_points=[
                PortfolioPoint(at=p.at, value=p.value, net_flows=p.net_flows)
                for p in history.points
            ],
        )

    @strawberry.field(
        description=f"The points, oldest first, evenly thinned to `limit` (1 to {MAX_POINTS}).",
        metadata=cost(list_size=_points_size),
    )
    def points(
        self,
        limit: Annotated[
            int,
            strawberry.argument(
                description=f"How many points at most: 1 to {MAX_POINTS} (BAD_USER_INPUT "
                "outside); the first and the last are kept (with 1: the last)."
            ),
        ] = 100,
    ) -> list[PortfolioPoint]:
        return resolve.sample_points(self.all_points, limit)


@strawberry.type(
    description="The viewer's portfolio, valued now at the bid: what the holdings would "
    "fetch. USD figures to the cent."
)
class Portfolio:
    total_value: Decimal = strawberry.field(description="cash + the holdings' marketValue.")
    cash: Decimal = strawberry.field(description="USD, available + held.")
    cash_available: Decimal = strawberry.field(
        description="USD free to spend now (cash minus what open buy orders hold)."
    )
    holdings: list[Holding] = strawberry.field(
        description="Assets held (quantity > 0), by symbol.",
        metadata=cost(list_size=len(ASSETS)),
    )
    realized_pnl: Decimal = strawberry.field(
        description="Gains and losses of every sell, net of fees, against the average cost."
    )
    unrealized_pnl: Decimal = strawberry.field(description="Sum of the holdings' unrealizedPnl.")
    day_change: Decimal = strawberry.field(
        description="What the current holdings gained or lost over 24 hours (USD)."
    )
    day_change_percent: Decimal | None = strawberry.field(
        description="dayChange / (totalValue - dayChange) x 100."
    )
    net_deposits: Decimal = strawberry.field(
        description="Deposits and admin adjustments received (USD), the starting balance "
        "included: totalValue - netDeposits is what trading made or lost."
    )
    complete: bool = strawberry.field(
        description="False while a holding has no price yet (it is then left out of totals)."
    )
    valued_at: datetime = strawberry.field(description="When these figures were computed.")
    # The valuation this was built from: `history` ends with it instead of valuing
    # the portfolio again (the subscription resolves this type on every push).
    value: strawberry.Private[PortfolioValue]

    @classmethod
    def from_domain(cls, value: PortfolioValue) -> Portfolio:
        return cls(
            total_value=value.total_value,
            cash=value.cash,
            cash_available=value.cash_available,
            holdings=[
                Holding(
                    asset=h.asset,
                    quantity=h.quantity,
                    available=h.available,
                    held=h.held,
                    average_cost=h.average_cost,
                    cost_basis=h.cost_basis,
                    price=h.price,
                    market_value=h.market_value,
                    unrealized_pnl=h.unrealized_pnl,
                    unrealized_pnl_percent=h.unrealized_pnl_percent,
                    allocation_percent=h.allocation_percent,
                    day_change=h.day_change,
                    user_id=value.user_id,
                )
                for h in value.holdings
            ],
            realized_pnl=value.realized_pnl,
            unrealized_pnl=value.unrealized_pnl,
            day_change=value.day_change,
            day_change_percent=value.day_change_percent,
            net_deposits=value.net_flows,
            complete=value.complete,
            valued_at=value.at,
            value=value,
        )

    @strawberry.field(
        description="Performance over `range` (DAY by default) or between `from` and `to`."
    )
    async def history(
        self,
        info: Info,
        range: Annotated[
            HistoryRange | None,
            strawberry.argument(
                description="A period ending now; DAY when neither range nor from is given."
                " Not with from/to (BAD_USER_INPUT)."
            ),
        ] = None,
        start: Annotated[
            datetime | None,
            strawberry.argument(
                description="The period's start (inclusive), instead of range.", name="from"
            ),
        ] = None,
        end: Annotated[
            datetime | None,
            strawberry.argument(description="The period's end; now when omitted.", name="to"),
        ] = None,
    ) -> PortfolioHistory:
        return PortfolioHistory.from_domain(
            await resolve.history(info, range, start, end, self.value)
        )


@strawberry.type
class PortfolioQuery:
    @strawberry.field(
        description="The viewer's portfolio (API keys: `portfolio:read`).",
        permission_classes=PORTFOLIO_READ,
    )
    async def portfolio(self, info: Info) -> Portfolio:
        return Portfolio.from_domain(await resolve.portfolio(info))


@strawberry.type
class PortfolioSubscription:
    @strawberry.subscription(
        description="The viewer's live portfolio: now, then again when a held asset's price "
        "moves or a trade lands, at most once a second. " + PRIVATE_STREAM_ENDS,
        permission_classes=PORTFOLIO_READ,
    )
    async def portfolio(self, info: Info) -> AsyncGenerator[Portfolio]:
        async for value in resolve.portfolio_stream(info):
            yield Portfolio.from_domain(value)
