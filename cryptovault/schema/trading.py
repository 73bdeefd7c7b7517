"""Trading in the schema: the account, orders, trades, the ledger, and the admin's
balance adjustments and reconciliation."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal
from enum import Enum

import strawberry
from strawberry.permission import BasePermission

from cryptovault.resolvers import trading as resolve
from cryptovault.schema.context import Info
from cryptovault.schema.cost import cost
from cryptovault.schema.node import NODE_ID, Node
from cryptovault.schema.pagination import Connection
from cryptovault.schema.permissions import (
    PRIVATE_STREAM_ENDS,
    HasScope,
    IsAdmin,
    IsAuthenticated,
    NotFrozen,
)
from cryptovault.trading.enums import Liquidity, OrderStatus, OrderType, TimeInForce
from cryptovault.trading.enums import Side as OrderSide

MAX_PAGE = 200
READ: list[type[BasePermission]] = [IsAuthenticated, HasScope("portfolio:read")]
TRADE: list[type[BasePermission]] = [IsAuthenticated, NotFrozen, HasScope("trade")]


# The domain's enums, registered under their schema names (as market intervals are).
strawberry.enum(OrderSide, name="OrderSide")
strawberry.enum(
    OrderType,
    name="OrderType",
    description="MARKET fills now at the ask/bid; LIMIT at its price or better; "
    "STOP becomes a market order when the last price crosses stopPrice; STOP_LIMIT becomes "
    "a limit order then.",
)
strawberry.enum(
    TimeInForce,
    name="TimeInForce",
    description="GTC: until filled or canceled; IOC: fill what can be filled "
    "now, cancel the rest; FOK: fill everything now or nothing; GTD: until expiresAt.",
)
strawberry.enum(
    OrderStatus,
    name="OrderStatus",
    description="PENDING: being placed (funds being reserved, fills on arrival); OPEN: "
    "resting, nothing filled; PARTIALLY_FILLED: resting, part filled; FILLED: done (any "
    "unusable remainder below minSize released); CANCELED: by you, by IOC/FOK, by a "
    "freeze, or because its funds cannot cover the rest (see rejectReason); REJECTED: "
    "never placed (rejectReason says why: insufficient funds, or interrupted); EXPIRED: "
    "a GTD order past expiresAt.",
)
strawberry.enum(
    Liquidity,
    name="Liquidity",
    description="MAKER: a limit order that rested, filled by a later tick; TAKER: filled "
    "on arrival (market orders, marketable limits, triggered stops).",
)


@strawberry.enum(
    description="What an order event records: the status the order entered (as OrderStatus), "
    "or TRIGGERED when a stop order's stop price was crossed. Values may be added: treat an "
    "unknown one as a status you do not display."
)
class OrderEventType(Enum):
    PENDING = "PENDING"
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    TRIGGERED = "TRIGGERED"


@strawberry.enum(
    description="Why money moved. FUNDING: the starting balance credited on first use; "
    "ADJUSTMENT: an administrator's credit or debit (adjustBalance); TRADE: a fill (the "
    "asset bought or sold, the cash paid or received, its fee included); FEE: a fill's fee "
    "as its own entry, only on entries written before fees were part of the trade's "
    "entry. Values may be added: treat an unknown one as a movement of another kind."
)
class LedgerEntryType(Enum):
    FUNDING = "funding"
    ADJUSTMENT = "adjustment"
    TRADE = "trade"
    FEE = "fee"


@strawberry.type(description="One asset of an account. total = available + held.")
class Balance:
    asset: str
    available: Decimal
    held: Decimal = strawberry.field(description="Reserved by open orders.")
    total: Decimal


@strawberry.type(description="The viewer's paper trading account.")
class Account:
    balances: list[Balance] = strawberry.field(metadata=cost(list_size=11))


@strawberry.type(
    description="One leg of a ledger movement; the legs of a movement sum to zero per asset."
)
class LedgerEntry:
    id: strawberry.ID
    txn_id: str = strawberry.field(description="The movement this entry belongs to.")
    asset: str
    amount: Decimal = strawberry.field(description="Positive: credited; negative: debited.")
    balance_after: Decimal | None = strawberry.field(description="The account's total after it.")
    kind: str = strawberry.field(
        description="funding, adjustment or trade (fee: entries written before fees "
        "were part of their trade's entry). The same as `type`, lower-case.",
        deprecation_reason="Use `type` (the LedgerEntryType enum): the same values, typed.",
    )
    type: LedgerEntryType = strawberry.field(description="Why the money moved.")
    order_id: strawberry.ID | None
    trade_id: strawberry.ID | None
    created_at: datetime


@strawberry.type(description="One fill of an order.")
class Trade(Node):
    id: strawberry.ID = strawberry.field(description=NODE_ID)
    order_id: strawberry.ID
    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    fee: Decimal = strawberry.field(description="In USD.")
    liquidity: Liquidity
    created_at: datetime

    @strawberry.field(
        description="The viewer's ledger entries of this fill (its legs in their account).",
        metadata=cost(list_size=3),
    )
    async def ledger_entries(self, info: Info) -> list[LedgerEntry]:
        return await resolve.entries_of_trade(info, str(self.id))


@strawberry.type(description="A status an order passed through, and when.")
class OrderEvent:
    status: str = strawberry.field(
        description="An OrderStatus, or TRIGGERED for stops. The same as `type`.",
        deprecation_reason="Use `type` (the OrderEventType enum): the same values, typed.",
    )
    type: OrderEventType = strawberry.field(
        description="The status the order entered, or TRIGGERED."
    )
    at: datetime


@strawberry.type(description="An order. Fills come from the price feed, never from the client.")
class Order(Node):
    id: strawberry.ID = strawberry.field(description=NODE_ID)
    client_order_id: str | None
    symbol: str
    side: OrderSide
    type: OrderType
    time_in_force: TimeInForce
    status: OrderStatus
    quantity: Decimal | None = strawberry.field(
        description="In base units; null for quoteQuantity buys."
    )
    quote_quantity: Decimal | None = strawberry.field(description="USD to spend (market buys).")
    limit_price: Decimal | None
    stop_price: Decimal | None
    expires_at: datetime | None
    triggered: bool = strawberry.field(description="A stop order whose stop price was crossed.")
    filled_quantity: Decimal
    average_fill_price: Decimal | None = strawberry.field(description="Volume-weighted over fills.")
    fees: Decimal = strawberry.field(description="In USD.")
    held_asset: str
    held_amount: Decimal = strawberry.field(description="Still reserved for this order.")
    reject_reason: str | None = strawberry.field(
        description="Why the system rejected, canceled or expired it; null when you "
        "canceled it or it filled."
    )
    cancel_requested: bool = strawberry.field(
        description="A cancel was asked while the order was being placed or filled: it "
        "is canceled as soon as that is done (orderUpdates shows it)."
    )
    history: list[OrderEvent] = strawberry.field(metadata=cost(list_size=5))
    created_at: datetime
    updated_at: datetime

    @strawberry.field(
        description="The fills of this order, oldest first.", metadata=cost(list_size=10)
    )
    async def trades(self, info: Info) -> list[Trade]:
        return await resolve.trades_of_order(info, str(self.id))


@strawberry.input
class PlaceOrderInput:
    symbol: str
    side: OrderSide
    type: OrderType
    quantity: Decimal | None = strawberry.field(
        default=None, description="Base units, a multiple of the asset's quantityIncrement."
    )
    quote_quantity: Decimal | None = strawberry.field(
        default=None,
        description="Market buys only: USD to spend, fees included, instead of quantity.",
    )
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    expires_at: datetime | None = strawberry.field(default=None, description="GTD orders only.")
    client_order_id: str | None = strawberry.field(
        default=None,
        description="Your id: placing again with the same one returns the first order.",
    )


@strawberry.input
class AdjustBalanceInput:
    user_id: strawberry.ID
    asset: str = strawberry.field(description='"USD" or an asset symbol.')
    amount: Decimal = strawberry.field(description="Positive credits, negative debits.")
    reason: str
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Your unique key for this adjustment (1 to 100 characters): sending "
        "it again, even concurrently or after a timeout, applies it once and answers the "
        "same. Without one a retried request applies twice: always send one.",
    )


@strawberry.type
class AssetTotal:
    asset: str
    total: Decimal


@strawberry.type(description="Whether the books balance: ok is true when nothing is listed.")
class Reconciliation:
    ok: bool
    trial_balance: list[AssetTotal] = strawberry.field(
        description="The sum of every ledger entry per asset: always zero.",
        metadata=cost(list_size=11),
    )
    discrepancies: list[str]
    checked_balances: int
    checked_orders: int


@strawberry.type
class TradingQuery:
    @strawberry.field(description="The viewer's balances.", permission_classes=READ)
    async def account(self, info: Info) -> Account:
        return await resolve.account(info)

    @strawberry.field(
        description="The viewer's orders, newest first.",
        permission_classes=READ,
        metadata=cost(max_page=MAX_PAGE),
    )
    async def orders(
        self,
        info: Info,
        first: int | None = 50,
        after: str | None = None,
        status: list[OrderStatus] | None = None,
        symbol: str | None = None,
    ) -> Connection[Order]:
        return await resolve.orders(info, first, after, status, symbol)

    @strawberry.field(description="One of the viewer's orders.", permission_classes=READ)
    async def order(self, info: Info, id: strawberry.ID) -> Order | None:
        return await resolve.order(info, str(id))

    @strawberry.field(
        description="The viewer's fills, newest first.",
        permission_classes=READ,
        metadata=cost(max_page=MAX_PAGE),
    )
    async def trades(
        self,
        info: Info,
        first: int | None = 50,
        after: str | None = None,
        symbol: str | None = None,
    ) -> Connection[Trade]:
        return await resolve.trades(info, first, after, symbol)

    @strawberry.field(
        description="The viewer's ledger entries, newest first.",
        permission_classes=READ,
        metadata=cost(max_page=MAX_PAGE),
    )
    async def ledger(
        self, info: Info, first: int | None = 50, after: str | None = None, asset: str | None = None
    ) -> Connection[LedgerEntry]:
        return await resolve.ledger(info, first, after, asset)

    @strawberry.field(
        description="Admin: trial balance, cached balances vs. ledger, holds vs. open orders.",
        permission_classes=[IsAdmin],
    )
    async def reconciliation(self, info: Info) -> Reconciliation:
        return await resolve.reconciliation(info)


@strawberry.type
class TradingMutation:
    @strawberry.mutation(
        description="Place an order. Funds are reserved at once (INSUFFICIENT_FUNDS if not "
        "available: nothing is held and the order is recorded REJECTED); what the current "
        "price fills is filled before the answer, so the answer shows those fills and the "
        "order's status after placement. Later fills come from the price feed.",
        permission_classes=TRADE,
    )
    async def place_order(self, info: Info, input: PlaceOrderInput) -> Order:
        return await resolve.place_order(info, input)

    @strawberry.mutation(
        description="Cancel an OPEN or PARTIALLY_FILLED order; releases what it still holds. "
        "An order being placed or filled is canceled by its owner right after (the answer "
        "has cancelRequested: true while that is under way).",
        permission_classes=TRADE,
    )
    async def cancel_order(self, info: Info, id: strawberry.ID) -> Order:
        return await resolve.cancel_order(info, str(id))

    @strawberry.mutation(
        description="Admin: credit or debit paper funds through the ledger, once per "
        "idempotencyKey. Audited.",
        permission_classes=[IsAdmin],
    )
    async def adjust_balance(self, info: Info, input: AdjustBalanceInput) -> Balance:
        return await resolve.adjust_balance(info, input)


@strawberry.type
class TradingSubscription:
    @strawberry.subscription(
        description="The viewer's orders on every state change. " + PRIVATE_STREAM_ENDS,
        permission_classes=READ,
    )
    async def order_updates(self, info: Info) -> AsyncGenerator[Order]:
        async for order in resolve.order_stream(info):
            yield order
