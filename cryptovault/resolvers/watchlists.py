"""Watchlist resolvers: return the viewer's watchlist (schema/watchlists.py maps it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptovault.market.assets import ASSETS, Asset
from cryptovault.portfolio.watchlists import Watchlist
from cryptovault.resolvers.access import require_viewer

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


def assets_of(symbols: list[str]) -> list[Asset]:
    return [ASSETS[s] for s in symbols]  # Watchlist keeps listed symbols only


async def watchlist(info: Info) -> Watchlist:
    viewer = require_viewer(info)
    return await info.context.services.watchlists.get(viewer.user_id)


async def add(info: Info, symbol: str) -> Watchlist:
    viewer = require_viewer(info)
    return await info.context.services.watchlists.add(viewer.user_id, symbol)


async def remove(info: Info, symbol: str) -> Watchlist:
    viewer = require_viewer(info)
    return await info.context.services.watchlists.remove(viewer.user_id, symbol)
