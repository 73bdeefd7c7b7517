"""Price alerts. An alert is ACTIVE until a tick meets its condition, then TRIGGERED
(once: a conditional update on `status` decides which writer wins)."""

from __future__ import annotations

from datetime import datetime

import pymongo
from beanie import DecimalAnnotation, Document
from pydantic import Field
from pymongo import IndexModel

from cryptovault.documents.common import new_id


class PriceAlertDocument(Document):
    id: str = Field(default_factory=new_id)  # type: ignore[assignment]
    user_id: str
    symbol: str
    condition: str  # "ABOVE" | "BELOW" | "PERCENT_CHANGE_24H"
    # A USD price (ABOVE, BELOW) or a signed 24 h change in percent.
    value: DecimalAnnotation
    status: str = "ACTIVE"  # "ACTIVE" | "TRIGGERED"
    created_at: datetime
    # Set when it fires: the tick's time, last price and 24 h change (percent).
    triggered_at: datetime | None = None
    triggered_price: DecimalAnnotation | None = None
    triggered_change_percent: DecimalAnnotation | None = None

    class Settings:
        name = "price_alerts"
        indexes = [
            # The viewer's alerts, newest first, optionally by status.
            IndexModel(
                [
                    ("user_id", pymongo.ASCENDING),
                    ("status", pymongo.ASCENDING),
                    ("created_at", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="user_status_created",
            ),
            IndexModel(
                [
                    ("user_id", pymongo.ASCENDING),
                    ("created_at", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="user_created",
            ),
            # Loading every active alert into the in-memory index at start-up.
            IndexModel(
                [("status", pymongo.ASCENDING), ("symbol", pymongo.ASCENDING)],
                name="status_symbol",
            ),
        ]


class AlertQuotaDocument(Document):
    """A user's slots for active alerts: the ids of their active alerts, at most
    ALERTS_MAX_ACTIVE. Claimed with one conditional update, so concurrent creations
    cannot pass the cap."""

    id: str  # type: ignore[assignment]  # the user id
    active: list[str] = Field(default_factory=list)

    class Settings:
        name = "alert_quotas"
