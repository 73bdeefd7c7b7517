"""Every DataLoader, one named class per relation (Saleor's `OrderByIdLoader` style),
so that a list never reads the store once per item. A loader lives as long as its
request: `Loader.of(info)` finds this request's instance (in `context.state`) or
makes it. Over a WebSocket the context lives as long as the connection, so loaders
are only used by queries, never by subscription events."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, ClassVar, Self

from strawberry.dataloader import DataLoader

from cryptovault.documents.trading import LedgerEntryDocument, TradeDocument
from cryptovault.paging import Page
from cryptovault.trading import queries

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


class Loader[K, V](DataLoader[K, V]):
    """A DataLoader kept once per request (and per `params`) under `context_key`;
    subclasses read many keys at once in `batch_load`."""

    context_key: ClassVar[str]

    def __init__(self, *params: Hashable) -> None:
        self.params = params
        super().__init__(load_fn=self.batch_load)

    async def batch_load(self, keys: list[K]) -> list[V]:
        raise NotImplementedError

    @classmethod
    def of(cls, info: Info, *params: Hashable) -> Self:
        loaders: dict[tuple[Any, ...], Any] = info.context.state.setdefault("loaders", {})
        key = (cls.context_key, *params)
        found = loaders.get(key)
        if found is None:
            found = loaders[key] = cls(*params)
        return found


class TradesByOrderIdLoader(Loader[str, list[TradeDocument]]):
    """An order's trades, oldest first."""

    context_key = "trades_by_order_id"

    async def batch_load(self, keys: list[str]) -> list[list[TradeDocument]]:
        return await queries.trades_by_order(keys)


class LedgerEntriesByTradeIdLoader(Loader[str, list[LedgerEntryDocument]]):
    """A trade's ledger entries: every account's legs (filter by owner when reading)."""

    context_key = "ledger_entries_by_trade_id"

    async def batch_load(self, keys: list[str]) -> list[list[LedgerEntryDocument]]:
        return await queries.entries_by_trade(keys)


class FirstTradesPageBySymbolLoader(Loader[str, Page[TradeDocument]]):
    """The first page of a user's trades in a symbol (a holding's trades), every
    symbol's in one read. Params: the user id and the page size."""

    context_key = "first_trades_page_by_symbol"

    def __init__(self, user_id: str, size: int) -> None:
        self.user_id, self.size = user_id, size
        super().__init__(user_id, size)

    async def batch_load(self, keys: list[str]) -> list[Page[TradeDocument]]:
        return await queries.first_trade_pages(self.user_id, self.size, keys)
