"""Trading documents: balances (a cache of the ledger, with holds), immutable ledger
entries (numbered per balance), orders (with their owner, fencing token and in-flight
work), trades, and admin balance adjustments (their journal)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pymongo
from beanie import DecimalAnnotation, Document
from pydantic import Field
from pymongo import IndexModel

from cryptovault.documents.common import new_id
from cryptovault.documents.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce


class BalanceDocument(Document):
    """One user's balance of one asset: the sum of its ledger entries numbered up to
    `seq` (trading/ledger.py)."""

    id: str  # type: ignore[assignment]  # "<account>:<asset>"
    account: str  # a user id
    asset: str
    available: DecimalAnnotation = Decimal(0)
    held: DecimalAnnotation = Decimal(0)
    seq: int = 0

    class Settings:
        name = "balances"
        indexes = [IndexModel([("account", pymongo.ASCENDING)], name="account")]


class LedgerEntryDocument(Document):
    """One change to one user balance, with the house lines that balance it: amount
    plus the lines sum to zero per asset. Entries written before lines existed are one
    leg each (house accounts' legs as entries of their own, with no balance_after)."""

    id: str  # type: ignore[assignment]  # "<txn id>:<leg>", deterministic
    txn_id: str
    account: str
    asset: str
    amount: DecimalAnnotation  # available_delta + held_delta
    available_delta: DecimalAnnotation | None = None
    held_delta: DecimalAnnotation | None = None
    lines: list[dict[str, Any]] = Field(default_factory=list)
    # "<account>:<asset>#<seq>": the entry's number in its balance, unique.
    slot: str | None = None
    seq: int | None = None
    # The account's total after this entry.
    balance_after: DecimalAnnotation | None = None
    kind: str  # funding | adjustment | trade | hold | release | void (legacy: fee)
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
            IndexModel([("order_id", pymongo.ASCENDING)], name="order"),
            # Sparse: entries written before numbering have none.
            IndexModel([("slot", pymongo.ASCENDING)], unique=True, sparse=True, name="slot"),
        ]


class OrderDocument(Document):
    """An order. Work that spans several writes (placing it, a fill, a close) is done
    by its owner: `owner` and `lease_until` are set, and `fence` raised, by the
    conditional update that takes it; every later write of that work is conditional
    on `fence`, so a taken-over owner (lease expired) can change nothing."""

    id: str = Field(default_factory=new_id)  # type: ignore[assignment]
    user_id: str
    client_order_id: str | None = None
    # "<user id>:<client order id>", or "order:<id>" without one: unique, so placing
    # twice with one client order id creates one order.
    idempotency_key: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce = TimeInForce.GTC
    quantity: DecimalAnnotation | None = None
    quote_quantity: DecimalAnnotation | None = None
    limit_price: DecimalAnnotation | None = None
    stop_price: DecimalAnnotation | None = None
    expires_at: datetime | None = None
    status: OrderStatus = OrderStatus.PENDING
    triggered: bool = False
    # What the tick matcher finds it by: trading.matching.match_key (None: placed
    # before match keys, until migration 0003).
    match_key: str | None = None
    filled_quantity: DecimalAnnotation = Decimal(0)
    spent_quote: DecimalAnnotation = Decimal(0)  # sum of quantity x price of fills
    # Sum of quantity x price x fee rate of fills (unrounded): fees are charged as
    # ceil(fee_basis) cumulatively (trading/rules.py).
    fee_basis: DecimalAnnotation | None = None
    fees: DecimalAnnotation = Decimal(0)
    hold_asset: str
    hold_remaining: DecimalAnnotation = Decimal(0)
    fills: int = 0
    owner: str | None = None
    fence: int = 0
    lease_until: datetime | None = None
    # The owner's work in flight (a planned fill and/or close): whoever owns the
    # order next completes it as planned.
    work: dict[str, Any] | None = None
    # A cancel (or expiry, or freeze) asked while the order was owned: its owner
    # closes it before letting go.
    close_request: dict[str, Any] | None = None
    reject_reason: str | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    # "pending" while the order carries audit entries not yet in the audit log (in its
    # `audit` list, written by the writes that decide them and never read into this
    # model): trading/order_audit.py copies them, then removes both.
    audit_state: str | None = None

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
            # The tick matcher reads only the orders a tick crosses (matching.crossing):
            # per branch of its filter, one range of the symbol's open orders by match
            # key, and the open GTD orders of the symbol by expiry.
            IndexModel(
                [
                    ("symbol", pymongo.ASCENDING),
                    ("status", pymongo.ASCENDING),
                    ("match_key", pymongo.ASCENDING),
                ],
                name="symbol_status_match_key",
            ),
            IndexModel(
                [
                    ("symbol", pymongo.ASCENDING),
                    ("status", pymongo.ASCENDING),
                    ("time_in_force", pymongo.ASCENDING),
                    ("expires_at", pymongo.ASCENDING),
                ],
                name="symbol_status_expiry",
            ),
            # The recovery sweep: owned orders whose lease ran out.
            IndexModel([("lease_until", pymongo.ASCENDING)], name="lease"),
            # The audit copier: the few orders with entries pending, not the history.
            IndexModel([("audit_state", pymongo.ASCENDING)], sparse=True, name="audit_pending"),
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
    side: Side
    quantity: DecimalAnnotation
    price: DecimalAnnotation
    fee: DecimalAnnotation
    liquidity: Liquidity
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


class AdjustmentDocument(Document):
    """An admin's balance adjustment, keyed by the admin's idempotency key: written
    before its ledger entry, so a retry (or the recovery sweep after a crash) finishes
    the same adjustment instead of making another."""

    id: str  # type: ignore[assignment]  # "<user id>:<idempotency key>"
    user_id: str
    asset: str
    amount: DecimalAnnotation
    reason: str
    actor_id: str | None
    actor_api_key_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    state: str = "pending"  # pending | applied | refused
    created_at: datetime
    updated_at: datetime

    class Settings:
        name = "adjustments"
        indexes = [
            IndexModel(
                [("state", pymongo.ASCENDING), ("created_at", pymongo.ASCENDING)],
                name="state_created",
            )
        ]
