"""The viewer's watchlist in the schema."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from cryptovault.extensions.cost import cost
from cryptovault.market.assets import ASSETS
from cryptovault.portfolio import watchlists as domain
from cryptovault.resolvers import watchlists as resolve
from cryptovault.resolvers.context import Info
from cryptovault.schema.market import Asset
from cryptovault.schema.permissions import (
    PORTFOLIO_READ,
    PORTFOLIO_WRITE,
)


@strawberry.type(description="The assets the viewer follows, in the order they were added.")
class Watchlist:
    symbols: list[str] = strawberry.field(description='Asset symbols, e.g. ["BTC", "ETH"].')
    updated_at: datetime | None = strawberry.field(
        description="When a symbol was last added or removed; null for an empty watchlist "
        "never changed."
    )

    @classmethod
    def from_domain(cls, w: domain.Watchlist) -> Watchlist:
        return cls(symbols=list(w.symbols), updated_at=w.updated_at)

    # A watchlist holds distinct catalogue symbols: never more than the catalogue.
    @strawberry.field(
        description="The watched assets, each with its latest price.",
        metadata=cost(list_size=len(ASSETS)),
    )
    def assets(self) -> list[Asset]:
        return [Asset.from_domain(a) for a in resolve.assets_of(self.symbols)]


@strawberry.type
class WatchlistQuery:
    @strawberry.field(
        description="The viewer's watchlist (API keys: `portfolio:read`).",
        permission_classes=PORTFOLIO_READ,
    )
    async def watchlist(self, info: Info) -> Watchlist:
        return Watchlist.from_domain(await resolve.watchlist(info))


@strawberry.type
class WatchlistMutation:
    @strawberry.mutation(
        description="Add an asset to the end of the watchlist. Already there: nothing "
        "changes. Unknown symbol: BAD_USER_INPUT; a full watchlist (WATCHLIST_MAX_SYMBOLS, "
        "50 by default): CONFLICT. API keys: `portfolio:write`.",
        permission_classes=PORTFOLIO_WRITE,
    )
    async def add_to_watchlist(
        self,
        info: Info,
        symbol: Annotated[
            str, strawberry.argument(description='An asset symbol, e.g. "BTC" (case-insensitive).')
        ],
    ) -> Watchlist:
        return Watchlist.from_domain(await resolve.add(info, symbol))

    @strawberry.mutation(
        description="Remove an asset from the watchlist. Not there: nothing changes. "
        "Unknown symbol: BAD_USER_INPUT. API keys: `portfolio:write`.",
        permission_classes=PORTFOLIO_WRITE,
    )
    async def remove_from_watchlist(
        self,
        info: Info,
        symbol: Annotated[
            str, strawberry.argument(description='An asset symbol, e.g. "BTC" (case-insensitive).')
        ],
    ) -> Watchlist:
        return Watchlist.from_domain(await resolve.remove(info, symbol))
