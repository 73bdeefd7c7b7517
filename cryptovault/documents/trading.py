"""Trading documents: balances (a cache of the ledger, with holds), immutable ledger
entries, orders (with their in-flight fill journal) and trades."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pymongo
from beanie import DecimalAnnotation, Document
from pydantic import Field
from pymongo import IndexModel

from cryptovault.documents.common import new_id


class BalanceDocument(Document):
    """One account's balance of one asset. `applied` keeps the ids of the latest
    movements with the total after each, so a retried movement is applied once."""

    id: str  # type: ignore[assignment]  # "<account>:<asset>"
    account: str  # a user id, or "house:<name>"
    asset: str
    available: DecimalAnnotation = Decimal(0)
    held: DecimalAnnotation = Decimal(0)
    applied: list[dict[str, Any]] = Field(default_factory=list)

    class Settings:
        name = "balances"
        indexes = [IndexModel([("account", pymongo.ASCENDING)], name="account")]


class LedgerEntryDocument(Document):
    """One leg of a movement. The legs of a movement sum to zero per asset."""

    id: str  # type: ignore[assignment]  # "<txn id>:<leg>", deterministic
    txn_id: str
    account: str
    asset: str
    amount: DecimalAnnotation
    # The account's total after this entry; None for house accounts, which keep no
    # cached balance (their balance is the sum of their entries).
    balance_after: DecimalAnnotation | None = None
    kind: str  # funding | adjustment | trade | fee
    order_id: str | None = None
    trade_id: str | None = None
    created_at: datetime

    class Settings:
        name = "ledger"
        indexes = [
            IndexModel(
                [("account", pymongo.ASCENDING), ("created_at", pymongo.DESCENDING)],
                name="account_created",
            ),
            IndexModel([("trade_id", pymongo.ASCENDING)], name="trade"),
        ]


class OrderDocument(Document):
    id: str = Field(default_factory=new_id)  # type: ignore[assignment]
    user_id: str
    client_order_id: str | None = None
    # "<user id>:<client order id>", or "order:<id>" without one: unique, so placing
    # twice with one client order id creates one order.
    idempotency_key: str
    symbol: str
    side: str  # BUY | SELL
    type: str  # MARKET | LIMIT | STOP | STOP_LIMIT
    time_in_force: str = "GTC"
    quantity: DecimalAnnotation | None = None
    quote_quantity: DecimalAnnotation | None = None
    limit_price: DecimalAnnotation | None = None
    stop_price: DecimalAnnotation | None = None
    expires_at: datetime | None = None
    status: str = "PENDING"
    triggered: bool = False
    filled_quantity: DecimalAnnotation = Decimal(0)
    spent_quote: DecimalAnnotation = Decimal(0)  # sum of quantity x price of fills
    fees: DecimalAnnotation = Decimal(0)
    hold_asset: str
    hold_remaining: DecimalAnnotation = Decimal(0)
    fills: int = 0
    # A fill claimed but not yet completed (its legs, trade, totals): the recovery
    # sweep completes it after a crash.
    pending_fill: dict[str, Any] | None = None
    # Set when the order closes holding funds, cleared once they are released: what
    # the recovery sweep looks for (an indexed field, not a scan of closed orders).
    release_due: datetime | None = None
    reject_reason: str | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    class Settings:
        name = "orders"
        indexes = [
            IndexModel([("idempotency_key", pymongo.ASCENDING)], unique=True, name="idempotency"),
            IndexModel(
                [("user_id", pymongo.ASCENDING), ("created_at", pymongo.DESCENDING)],
                name="user_created",
            ),
            IndexModel(
                [("symbol", pymongo.ASCENDING), ("status", pymongo.ASCENDING)],
                name="symbol_status",
            ),
            # The recovery sweep and expiry (every second on the feed leader).
            IndexModel([("pending_fill.at", pymongo.ASCENDING)], name="pending_fill"),
            IndexModel(
                [("status", pymongo.ASCENDING), ("created_at", pymongo.ASCENDING)],
                name="status_created",
            ),
            IndexModel([("release_due", pymongo.ASCENDING)], name="release_due"),
            IndexModel(
                [("time_in_force", pymongo.ASCENDING), ("expires_at", pymongo.ASCENDING)],
                name="expiry",
            ),
        ]


class TradeDocument(Document):
    id: str  # type: ignore[assignment]  # "<order id>:<fill number>", deterministic
    order_id: str
    user_id: str
    symbol: str
    side: str
    quantity: DecimalAnnotation
    price: DecimalAnnotation
    fee: DecimalAnnotation
    liquidity: str  # MAKER | TAKER
    created_at: datetime

    class Settings:
        name = "trades"
        indexes = [
            IndexModel(
                [("user_id", pymongo.ASCENDING), ("created_at", pymongo.DESCENDING)],
                name="user_created",
            ),
            IndexModel([("order_id", pymongo.ASCENDING)], name="order"),
        ]
