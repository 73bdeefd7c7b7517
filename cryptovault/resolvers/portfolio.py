"""Portfolio resolvers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from strawberry.dataloader import DataLoader

from cryptovault.documents.trading import TradeDocument
from cryptovault.errors import BadUserInput
from cryptovault.portfolio.performance import CENT, HUNDRED
from cryptovault.portfolio.service import MAX_POINTS, History, HistoryRange, thin
from cryptovault.portfolio.valuation import PortfolioValue
from cryptovault.resolvers import trading as trading_resolvers
from cryptovault.schema import portfolio as types
from cryptovault.schema.pagination import (
    Connection,
    check_page_size,
    connection,
    encode_time_cursor,
)
from cryptovault.schema.permissions import require_viewer
from cryptovault.schema.trading import MAX_PAGE
from cryptovault.security.viewer import while_valid

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info
    from cryptovault.schema import trading as trading_types


def to_portfolio(value: PortfolioValue) -> types.Portfolio:
    return types.Portfolio(
        total_value=value.total_value,
        cash=value.cash,
        cash_available=value.cash_available,
        holdings=[
            types.Holding(
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


def to_history(history: History) -> types.PortfolioHistory:
    start, end = history.start_value, history.end_value
    twr = history.time_weighted_return
    return types.PortfolioHistory(
        start=history.start,
        end=history.end,
        start_value=start,
        end_value=end,
        net_flows=history.net_flows,
        profit=(end - start - history.net_flows) if start is not None and end is not None else None,
        time_weighted_return=(twr * HUNDRED).quantize(CENT) if twr is not None else None,
        all_points=[
            types.PortfolioPoint(at=p.at, value=p.value, net_flows=p.net_flows)
            for p in history.points
        ],
    )


def sample_points(points: list[types.PortfolioPoint], limit: int) -> list[types.PortfolioPoint]:
    if not 1 <= limit <= MAX_POINTS:
        raise BadUserInput(f"limit must be between 1 and {MAX_POINTS}", limit=limit)
    return thin(points, limit)


async def portfolio(info: Info) -> types.Portfolio:
    viewer = require_viewer(info)
    return to_portfolio(await info.context.services.portfolio.valuation(viewer.user_id))


async def history(
    info: Info,
    range_: HistoryRange | None,
    start: datetime | None,
    end: datetime | None,
    live: PortfolioValue,
) -> types.PortfolioHistory:
    viewer = require_viewer(info)
    service = info.context.services.portfolio
    start, end = service.resolve_range(range_, start, end)
    return to_history(await service.history(viewer.user_id, start, end, live))


async def holding_trades(
    info: Info, asset: str, first: int | None, after: str | None
) -> Connection[trading_types.Trade]:
    size = check_page_size(first, 20, MAX_PAGE)
    if after is not None:  # a later page: the same as `trades(symbol: ...)`, same size
        return await trading_resolvers.trades(info, size, after, asset)
    viewer = require_viewer(info)
    loaders = info.context.state.setdefault("loaders", {})
    key = f"holding_trades:{viewer.user_id}:{size}"
    if key not in loaders:
        # Every holding's first page in one store read.
        loaders[key] = DataLoader(load_fn=partial(_first_pages, viewer.user_id, size))
    found, more = await loaders[key].load(asset)
    return connection(  # a first page: nothing before it
        found,
        lambda t: encode_time_cursor("trade", t.created_at, t.id),
        trading_resolvers.to_trade,
        has_next=more,
        has_previous=False,
    )


async def _first_pages(
    user_id: str, size: int, symbols: list[str]
) -> list[tuple[list[TradeDocument], bool]]:
    """The newest `size` trades of each symbol (and whether more exist), in one read."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"user_id": user_id, "symbol": {"$in": symbols}}},
        {
            "$setWindowFields": {
                "partitionBy": "$symbol",
                "sortBy": {"created_at": -1, "_id": -1},
                "output": {"rank": {"$documentNumber": {}}},
            }
        },
        {"$match": {"rank": {"$lte": size + 1}}},
        {"$sort": {"symbol": 1, "rank": 1}},
    ]
    pages: dict[str, list[TradeDocument]] = {s: [] for s in symbols}
    cursor = await TradeDocument.get_pymongo_collection().aggregate(pipeline)
    async for raw in cursor:
        raw.pop("rank", None)
        pages[raw["symbol"]].append(TradeDocument.model_validate(raw))
    return [(pages[s][:size], len(pages[s]) > size) for s in symbols]


async def portfolio_stream(info: Info) -> AsyncIterator[types.Portfolio]:
    viewer = require_viewer(info)
    async with info.context.services.portfolio.watch(viewer.user_id) as (current, sub):

        async def values() -> AsyncIterator[PortfolioValue]:
            yield current
            async for value in sub:
                yield value

        async for value in while_valid(viewer, values()):
            yield to_portfolio(value)
