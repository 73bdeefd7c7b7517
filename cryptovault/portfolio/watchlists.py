"""Watchlists: the assets a user follows, in the order added. One document per user;
every change is one atomic update, so concurrent adds never lose a symbol or pass the
cap."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from cryptovault.documents.common import now_ms
from cryptovault.documents.watchlists import WatchlistDocument
from cryptovault.errors import Conflict
from cryptovault.market.assets import ASSETS, get_asset


@dataclass(frozen=True, slots=True)
class Watchlist:
    symbols: tuple[str, ...]
    updated_at: datetime | None


EMPTY = Watchlist((), None)


def _view(raw: dict[str, Any] | None) -> Watchlist:
    if raw is None:
        return EMPTY
    # A symbol withdrawn from the catalogue since it was added is no longer shown.
    symbols = tuple(s for s in raw.get("symbols", ()) if s in ASSETS)
    return Watchlist(symbols, raw.get("updated_at"))


class Watchlists:
    def __init__(self, max_symbols: int) -> None:
        self.max_symbols = max_symbols

    @staticmethod
    def _collection():
        return WatchlistDocument.get_pymongo_collection()

    async def get(self, user_id: str) -> Watchlist:
        return _view(await self._collection().find_one({"_id": user_id}))

    async def add(self, user_id: str, symbol: str) -> Watchlist:
        """Append `symbol` (BAD_USER_INPUT if unknown). Adding a symbol already there
        changes nothing; a full watchlist is CONFLICT."""
        asset = get_asset(symbol)
        try:
            raw = await self._collection().find_one_and_update(
                # Matches when the symbol is missing and there is room. Otherwise the
                # upsert collides with the existing document's _id, and a read tells
                # "already there" (nothing to do) from "full".
                {
                    "_id": user_id,
                    "symbols": {"$ne": asset.symbol},
                    f"symbols.{self.max_symbols - 1}": {"$exists": False},
                },
                {
                    "$push": {"symbols": asset.symbol},
                    "$set": {"updated_at": now_ms()},
                    "$setOnInsert": {"user_id": user_id},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            current = await self.get(user_id)
            if asset.symbol in current.symbols:
                return current
            raise Conflict(
                f"The watchlist is full ({self.max_symbols} symbols): remove one first",
                maximum=self.max_symbols,
            ) from None
        return _view(raw)

    async def remove(self, user_id: str, symbol: str) -> Watchlist:
        """Remove `symbol` (BAD_USER_INPUT if unknown); removing one that is not
        there changes nothing."""
        asset = get_asset(symbol)
        raw = await self._collection().find_one_and_update(
            {"_id": user_id, "symbols": asset.symbol},
            {"$pull": {"symbols": asset.symbol}, "$set": {"updated_at": now_ms()}},
            return_document=ReturnDocument.AFTER,
        )
        return _view(raw) if raw is not None else await self.get(user_id)

    async def forget_user(self, user_id: str) -> None:
        """Erase the user's watchlist (account deletion)."""
        await self._collection().delete_one({"_id": user_id})
