"""Watchlists: one document per user, keyed by the user id."""

from __future__ import annotations

from datetime import datetime

from beanie import Document
from pydantic import Field


class WatchlistDocument(Document):
    id: str  # type: ignore[assignment]  # the owner's user id
    user_id: str  # the same, under the name every per-user collection uses
    symbols: list[str] = Field(default_factory=list)  # in the order added, no duplicates
    updated_at: datetime | None = None

    class Settings:
        name = "watchlists"
