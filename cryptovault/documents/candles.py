"""Closed candles, one document per (symbol, interval, start)."""

from __future__ import annotations

from datetime import datetime

import pymongo
from beanie import DecimalAnnotation, Document
from pymongo import IndexModel


class CandleDocument(Document):
    id: str  # type: ignore[assignment]  # "<symbol>:<interval>:<start epoch>"
    symbol: str
    interval: str
    start: datetime
    open: DecimalAnnotation
    high: DecimalAnnotation
    low: DecimalAnnotation
    close: DecimalAnnotation
    volume: DecimalAnnotation
    ticks: int
    # When the interval closes (start + interval). None only on candles stored before
    # migration 0001, which backfills it.
    end: datetime | None = None

    class Settings:
        name = "candles"
        indexes = [
            IndexModel(
                [
                    ("symbol", pymongo.ASCENDING),
                    ("interval", pymongo.ASCENDING),
                    ("start", pymongo.DESCENDING),
                ],
                name="symbol_interval_start",
            ),
            # Retention (MarketService.prune); migration 0001 creates it too.
            IndexModel(
                [("interval", pymongo.ASCENDING), ("end", pymongo.ASCENDING)],
                name="interval_end",
            ),
        ]
