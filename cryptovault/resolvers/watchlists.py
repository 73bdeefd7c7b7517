"""Watchlist resolvers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptovault.market.assets import ASSETS
from cryptovault.portfolio.watchlist import Watchlist
from cryptovault.resolvers.market import to_asset
from cryptovault.schema import market as market_types
from cryptovault.schema import watchlists as types
from cryptovault.schema.permissions import require_viewer

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


def to_watchlist(w: Watchlist) -> types.Watchlist:
    return types.Watchlist(symbols=list(w.symbols), updated_at=w.updated_at)


def assets_of(symbols: list[str]) -> list[market_types.Asset]:
    return [to_asset(ASSETS[s]) for s in symbols]  # Watchlist keeps listed symbols only


async def watchlist(info: Info) -> types.Watchlist:
    viewer = require_viewer(info)
    return to_watchlist(await info.context.services.watchlists.get(viewer.user_id))


async def add(info: Info, symbol: str) -> types.Watchlist:
    viewer = require_viewer(info)
    return to_watchlist(await info.context.services.watchlists.add(viewer.user_id, symbol))


async def remove(info: Info, symbol: str) -> types.Watchlist:
    viewer = require_viewer(info)
    return to_watchlist(await info.context.services.watchlists.remove(viewer.user_id, symbol))
