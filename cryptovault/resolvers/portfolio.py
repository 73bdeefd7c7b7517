"""Portfolio resolvers: the valuation, its history and a holding's trades, returned as
the portfolio service computes them (schema/portfolio.py maps them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING

from cryptovault.documents.trading import TradeDocument
from cryptovault.errors import BadUserInput
from cryptovault.paging import Page
from cryptovault.portfolio.service import MAX_POINTS, History, HistoryRange, thin
from cryptovault.portfolio.valuation import PortfolioValue
from cryptovault.resolvers import trading as trading_resolvers
from cryptovault.resolvers.access import require_viewer
from cryptovault.resolvers.loaders import FirstTradesPageBySymbolLoader
from cryptovault.security.viewer import while_valid
from cryptovault.trading.queries import HOLDING_TRADES

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


def sample_points[T](points: list[T], limit: int) -> list[T]:
    if not 1 <= limit <= MAX_POINTS:
        raise BadUserInput(f"limit must be between 1 and {MAX_POINTS}", limit=limit)
    return thin(points, limit)


async def portfolio(info: Info) -> PortfolioValue:
    viewer = require_viewer(info)
    return await info.context.services.portfolio.valuation(viewer.user_id)


async def history(
    info: Info,
    range_: HistoryRange | None,
    start: datetime | None,
    end: datetime | None,
    live: PortfolioValue,
) -> History:
    viewer = require_viewer(info)
    service = info.context.services.portfolio
    start, end = service.resolve_range(range_, start, end)
    return await service.history(viewer.user_id, start, end, live)


async def holding_trades(
    info: Info, asset: str, first: int | None, after: str | None
) -> Page[TradeDocument]:
    size = HOLDING_TRADES.size(first)
    if after is not None:  # a later page: the same as `trades(symbol: ...)`, same size
        return await trading_resolvers.trades(info, size, after, asset)
    viewer = require_viewer(info)
    # Every holding's first page in one store read.
    return await FirstTradesPageBySymbolLoader.of(info, viewer.user_id, size).load(asset)


async def portfolio_stream(info: Info) -> AsyncIterator[PortfolioValue]:
    viewer = require_viewer(info)
    async with info.context.services.portfolio.watch(viewer.user_id) as (current, sub):

        async def values() -> AsyncIterator[PortfolioValue]:
            yield current
            async for value in sub:
                yield value

        async for value in while_valid(viewer, values()):
            yield value
