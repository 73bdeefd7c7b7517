"""Portfolio documents: each user's books checkpoint (positions folded from the ledger)
and valuation snapshots for the performance history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pymongo
from beanie import DecimalAnnotation, Document
from pydantic import Field
from pymongo import IndexModel


class PortfolioBookDocument(Document):
    """A cache of the ledger, never the truth: cryptovault/portfolio/books.py writes and
    reads it raw (Decimal128 values in nested fields); deleting it only costs a refold."""

    id: str  # type: ignore[assignment]  # the user id
    user_id: str
    positions: dict[str, Any] = Field(default_factory=dict)
    net_flows: DecimalAnnotation | None = None
    flow_values: list[dict[str, Any]] = Field(default_factory=list)
    entries: int = 0
    through: datetime | None = None
    recent: list[dict[str, Any]] = Field(default_factory=list)
    last: dict[str, Any] = Field(default_factory=dict)
    version: int = 0
    updated_at: datetime | None = None

    class Settings:
        name = "portfolio_books"


class PortfolioSnapshotDocument(Document):
    """The portfolio's value at one moment, with the external flows received so far."""

    # Deterministic: "<user>:h:<hour start epoch>" for scheduled ones,
    # "<user>:t:<trade id>" for the one after a trade, so a retry writes nothing new.
    id: str  # type: ignore[assignment]
    user_id: str
    at: datetime
    value: DecimalAnnotation  # USD, holdings at the bid
    cash: DecimalAnnotation
    net_flows: DecimalAnnotation  # cumulative deposits and adjustments (USD)
    reason: str  # "schedule" | "trade" | "manual"

    class Settings:
        name = "portfolio_snapshots"
        indexes = [
            IndexModel([("user_id", pymongo.ASCENDING), ("at", pymongo.ASCENDING)], name="user_at")
        ]
