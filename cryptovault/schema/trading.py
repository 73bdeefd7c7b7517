"""Trading in the schema: the account, orders, trades, the ledger, and the admin's
balance adjustments and reconciliation."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated

import strawberry

from cryptovault.documents.enums import Liquidity, OrderStatus, OrderType, TimeInForce
from cryptovault.documents.enums import Side as OrderSide
from cryptovault.documents.trading import (
    BalanceDocument,
    LedgerEntryDocument,
    OrderDocument,
    TradeDocument,
)
from cryptovault.extensions.cost import cost
from cryptovault.market.assets import get_asset
from cryptovault.resolvers import trading as resolve
from cryptovault.resolvers.context import Info
from cryptovault.schema.enums import register_enum
from cryptovault.schema.node import NODE_ID, Node
from cryptovault.schema.pagination import AFTER, Connection, connection, first_argument
from cryptovault.schema.permissions import (
    ADMIN,
    PORTFOLIO_READ,
    PRIVATE_STREAM_ENDS,
    TRADE,
)
from cryptovault.trading.queries import LEDGER, ORDERS, TRADES
from cryptovault.trading.reconcile import Report
from cryptovault.trading.rules import OrderRequest

# The domain's enums, registered under their schema names (as market intervals are).
register_enum(
    OrderSide,
    name="OrderSide",
    description="Which way an order or a fill goes, the asset bought or sold against USD.",
    values={
        "BUY": "Buy the asset with USD (holds USD while open).",
        "SELL": "Sell the asset for USD (holds the asset while open).",
    },
)
register_enum(
    OrderType,
    name="OrderType",
    description="How an order is priced; see each value.",
    values={
        "MARKET": "Fills at once at the ask (buys) or bid (sells); needs quantity, or "
        "quoteQuantity for buys.",
        "LIMIT": "Fills at limitPrice or better; what does not fill at once rests (per "
        "timeInForce).",
        "STOP": "Rests until the last price crosses stopPrice (at or above it for buys, at "
        "or below for sells), then fills as a market order.",
        "STOP_LIMIT": "As STOP, but becomes a limit order at limitPrice when triggered.",
    },
)
register_enum(
    TimeInForce,
    name="TimeInForce",
    description="How long an order may rest; see each value.",
    values={
        "GTC": "Good till canceled: rests until filled or canceled (the default).",
        "IOC": "Immediate or cancel: fills what it can now, the rest is canceled.",
        "FOK": "Fill or kill: fills entirely now, or is canceled without any fill.",
        "GTD": "Good till date: rests until expiresAt (required), then EXPIRED.",
    },
)
register_enum(
    OrderStatus,
    name="OrderStatus",
    description="Where an order is in its life. OPEN and PARTIALLY_FILLED orders rest and "
    "hold funds; FILLED, CANCELED, REJECTED and EXPIRED are final.",
    values={
        "PENDING": "Being placed: funds being reserved, fills on arrival. Brief; an "
        "interrupted placement is finished or REJECTED by the recovery sweep.",
        "OPEN": "Resting, nothing filled yet.",
        "PARTIALLY_FILLED": "Resting, part filled.",
        "FILLED": "Done; any unusable remainder below the asset's minSize was released.",
        "CANCELED": "By you, by IOC/FOK, by an account freeze, or because its funds cannot "
        "cover the rest (rejectReason says which, except for yours).",
        "REJECTED": "Never placed: insufficient funds, or an interrupted placement "
        "(rejectReason says which).",
        "EXPIRED": "A GTD order past expiresAt.",
    },
)
register_enum(
    Liquidity,
    name="Liquidity",
    description="Whether a fill added liquidity (rested first) or took it.",
    values={
        "MAKER": "A limit order that rested and was filled by a later tick.",
        "TAKER": "Filled on arrival: market orders, marketable limits, triggered stops.",
    },
)


@strawberry.enum(
    description="What an order event records: the status the order entered (as OrderStatus), "
    "or TRIGGERED when a stop order's stop price was crossed. Values may be added: treat an "
    "unknown one as a status you do not display."
)
class OrderEventType(Enum):
    PENDING = strawberry.enum_value("PENDING", description="Placement started.")
    OPEN = strawberry.enum_value("OPEN", description="The order started resting.")
    PARTIALLY_FILLED = strawberry.enum_value(
        "PARTIALLY_FILLED", description="A fill left part of it open."
    )
    FILLED = strawberry.enum_value("FILLED", description="The last fill completed it.")
    CANCELED = strawberry.enum_value("CANCELED", description="It was canceled (final).")
    REJECTED = strawberry.enum_value("REJECTED", description="It was refused (final).")
    EXPIRED = strawberry.enum_value("EXPIRED", description="Its GTD time passed (final).")
    TRIGGERED = strawberry.enum_value(
        "TRIGGERED",
        description="A stop order's stop price was crossed: it now fills (STOP) or rests "
        "as a limit order (STOP_LIMIT). Not a status.",
    )


@strawberry.enum(
    description="Why money moved. FUNDING: the starting balance credited on first use; "
    "ADJUSTMENT: an administrator's credit or debit (adjustBalance); TRADE: a fill (the "
    "asset bought or sold, the cash paid or received, its fee included); FEE: a fill's fee "
    "as its own entry, only on entries written before fees were part of the trade's "
    "entry. Values may be added: treat an unknown one as a movement of another kind."
)
class LedgerEntryType(Enum):
    FUNDING = strawberry.enum_value(
        "funding", description="The starting balance, credited once on first use."
    )
    ADJUSTMENT = strawberry.enum_value(
        "adjustment", description="An administrator's credit or debit (audited)."
    )
    TRADE = strawberry.enum_value(
        "trade",
        description="A fill: the asset bought or sold, or the USD paid or received (fee included).",
    )
    FEE = strawberry.enum_value(
        "fee",
        description="A fill's fee on its own: only entries written before fees were part "
        "of the trade's entry.",
    )


@strawberry.type(description="One asset of an account. total = available + held.")
class Balance:
    asset: str = strawberry.field(description='"USD" or an asset symbol, e.g. "BTC".')
    available: Decimal = strawberry.field(
        description="Free to spend or sell now (Decimal, in the asset's units)."
    )
    held: Decimal = strawberry.field(description="Reserved by open orders.")
    total: Decimal = strawberry.field(
        description="available + held: what the account owns of the asset."
    )

    @classmethod
    def from_domain(cls, doc: BalanceDocument) -> Balance:
        return cls(
            asset=doc.asset, available=doc.available, held=doc.held, total=doc.available + doc.held
        )


@strawberry.type(description="The viewer's paper trading account.")
class Account:
    balances: list[Balance] = strawberry.field(
        description="USD and every asset the account has held, by asset; funded with the "
        "starting balance on first use.",
        metadata=cost(list_size=11),
    )


@strawberry.type(
    description="One leg of a ledger movement; the legs of a movement sum to zero per asset."
)
class LedgerEntry:
    id: strawberry.ID = strawberry.field(
        description="The entry's id (not a Node: read entries through `ledger` or "
        "Trade.ledgerEntries)."
    )
    txn_id: str = strawberry.field(description="The movement this entry belongs to.")
    asset: str = strawberry.field(description='"USD" or the asset symbol the amount is in.')
    amount: Decimal = strawberry.field(description="Positive: credited; negative: debited.")
    balance_after: Decimal | None = strawberry.field(description="The account's total after it.")
    kind: str = strawberry.field(
        description="funding, adjustment or trade (fee: entries written before fees "
        "were part of their trade's entry). The same as `type`, lower-case.",
        deprecation_reason="Use `type` (the LedgerEntryType enum): the same values, typed.",
    )
    type: LedgerEntryType = strawberry.field(description="Why the money moved.")
    order_id: strawberry.ID | None = strawberry.field(
        description="The order that caused it, for trade entries; else null."
    )
    trade_id: strawberry.ID | None = strawberry.field(
        description="The fill that caused it, for trade (and legacy fee) entries; else null."
    )
    created_at: datetime = strawberry.field(description="When the movement was recorded.")

    @classmethod
    def from_domain(cls, doc: LedgerEntryDocument) -> LedgerEntry:
        return cls(
            id=doc.id,  # type: ignore[arg-type]
            txn_id=doc.txn_id,
            asset=doc.asset,
            amount=doc.amount,
            balance_after=doc.balance_after,
            kind=doc.kind,
            type=LedgerEntryType(doc.kind),
            order_id=doc.order_id,  # type: ignore[arg-type]
            trade_id=doc.trade_id,  # type: ignore[arg-type]
            created_at=doc.created_at,
        )


@strawberry.type(description="One fill of an order.")
class Trade(Node):
    id: strawberry.ID = strawberry.field(description=NODE_ID)
    order_id: strawberry.ID = strawberry.field(
        description="The order this fill belongs to (see `order(id:)`)."
    )
    symbol: str = strawberry.field(description='The asset traded against USD, e.g. "BTC".')
    side: OrderSide = strawberry.field(description="BUY or SELL, as the order.")
    quantity: Decimal = strawberry.field(description="Base units filled (Decimal).")
    price: Decimal = strawberry.field(
        description="USD per unit: the ask for buys, the bid for sells, or the limit price for a "
        "maker fill."
    )
    fee: Decimal = strawberry.field(description="In USD.")
    liquidity: Liquidity = strawberry.field(
        description="MAKER (the order rested first) or TAKER; sets the fee rate."
    )
    created_at: datetime = strawberry.field(description="When the fill happened.")

    @classmethod
    def from_domain(cls, doc: TradeDocument) -> Trade:
        return cls(
            id=doc.id,  # type: ignore[arg-type]
            order_id=doc.order_id,  # type: ignore[arg-type]
            symbol=doc.symbol,
            side=doc.side,
            quantity=doc.quantity,
            price=doc.price,
            fee=doc.fee,
            liquidity=doc.liquidity,
            created_at=doc.created_at,
        )

    @strawberry.field(
        description="The viewer's ledger entries of this fill (its legs in their account).",
        metadata=cost(list_size=3),
    )
    async def ledger_entries(self, info: Info) -> list[LedgerEntry]:
        return [
            LedgerEntry.from_domain(e) for e in await resolve.entries_of_trade(info, str(self.id))
        ]


@strawberry.type(description="A status an order passed through, and when.")
class OrderEvent:
    status: str = strawberry.field(
        description="An OrderStatus, or TRIGGERED for stops. The same as `type`.",
        deprecation_reason="Use `type` (the OrderEventType enum): the same values, typed.",
    )
    type: OrderEventType = strawberry.field(
        description="The status the order entered, or TRIGGERED."
    )
    at: datetime = strawberry.field(description="When the order entered it.")


@strawberry.type(description="An order. Fills come from the price feed, never from the client.")
class Order(Node):
    id: strawberry.ID = strawberry.field(description=NODE_ID)
    client_order_id: str | None = strawberry.field(
        description="Your id for the order (1 to 64 characters), if you gave one at placement."
    )
    symbol: str = strawberry.field(description='The asset traded against USD, e.g. "BTC".')
    side: OrderSide = strawberry.field(description="BUY or SELL.")
    type: OrderType = strawberry.field(description="MARKET, LIMIT, STOP or STOP_LIMIT.")
    time_in_force: TimeInForce = strawberry.field(
        description="How long it may rest (GTC by default)."
    )
    status: OrderStatus = strawberry.field(
        description="Where the order is now; `history` lists every step."
    )
    quantity: Decimal | None = strawberry.field(
        description="In base units; null for quoteQuantity buys."
    )
    quote_quantity: Decimal | None = strawberry.field(description="USD to spend (market buys).")
    limit_price: Decimal | None = strawberry.field(
        description="USD per unit, LIMIT and STOP_LIMIT orders only."
    )
    stop_price: Decimal | None = strawberry.field(
        description="USD per unit: the last price that triggers a STOP or STOP_LIMIT order."
    )
    expires_at: datetime | None = strawberry.field(
        description="GTD orders only: when it expires if still open."
    )
    triggered: bool = strawberry.field(description="A stop order whose stop price was crossed.")
    filled_quantity: Decimal = strawberry.field(description="Base units filled so far (Decimal).")
    average_fill_price: Decimal | None = strawberry.field(description="Volume-weighted over fills.")
    fees: Decimal = strawberry.field(description="In USD.")
    held_asset: str = strawberry.field(
        description='"USD" for buys, the asset for sells: what the order reserves.'
    )
    held_amount: Decimal = strawberry.field(description="Still reserved for this order.")
    reject_reason: str | None = strawberry.field(
        description="Why the system rejected, canceled or expired it; null when you "
        "canceled it or it filled."
    )
    cancel_requested: bool = strawberry.field(
        description="A cancel was asked while the order was being placed or filled: it "
        "is canceled as soon as that is done (orderUpdates shows it)."
    )
    history: list[OrderEvent] = strawberry.field(
        description="Every status the order entered, oldest first (at most a handful).",
        metadata=cost(list_size=5),
    )
    created_at: datetime = strawberry.field(description="When it was placed.")
    updated_at: datetime = strawberry.field(description="When it last changed.")

    @classmethod
    def from_domain(cls, doc: OrderDocument) -> Order:
        average = doc.spent_quote / doc.filled_quantity if doc.filled_quantity else None
        if average is not None:
            average = average.quantize(get_asset(doc.symbol).price_increment / 10_000).normalize()
        return cls(
            id=doc.id,  # type: ignore[arg-type]
            client_order_id=doc.client_order_id,
            symbol=doc.symbol,
            side=doc.side,
            type=doc.type,
            time_in_force=doc.time_in_force,
            status=doc.status,
            quantity=doc.quantity,
            quote_quantity=doc.quote_quantity,
            limit_price=doc.limit_price,
            stop_price=doc.stop_price,
            expires_at=doc.expires_at,
            triggered=doc.triggered,
            filled_quantity=doc.filled_quantity,
            average_fill_price=average,
            fees=doc.fees,
            held_asset=doc.hold_asset,
            held_amount=doc.hold_remaining,
            reject_reason=doc.reject_reason,
            cancel_requested=doc.close_request is not None,
            history=[
                OrderEvent(status=h["status"], type=OrderEventType(h["status"]), at=h["at"])
                for h in doc.history
            ],
            created_at=doc.created_at,
            updated_at=doc.updated_at,
        )

    @strawberry.field(
        description="The fills of this order, oldest first.", metadata=cost(list_size=10)
    )
    async def trades(self, info: Info) -> list[Trade]:
        return [Trade.from_domain(t) for t in await resolve.trades_of_order(info, str(self.id))]


@strawberry.input(
    description="A new order. Quantities and prices are Decimal strings, multiples of the "
    "asset's quantityIncrement / priceIncrement; BAD_USER_INPUT (with `extensions.field`) names "
    "what is wrong."
)
class PlaceOrderInput:
    symbol: str = strawberry.field(
        description='The asset, e.g. "BTC" (case-insensitive); unknown symbols are BAD_USER_INPUT.'
    )
    side: OrderSide = strawberry.field(description="BUY or SELL.")
    type: OrderType = strawberry.field(
        description="MARKET, LIMIT, STOP or STOP_LIMIT (see OrderType for what each needs)."
    )
    quantity: Decimal | None = strawberry.field(
        default=None, description="Base units, a multiple of the asset's quantityIncrement."
    )
    quote_quantity: Decimal | None = strawberry.field(
        default=None,
        description="Market buys only: USD to spend, fees included, instead of quantity.",
    )
    limit_price: Decimal | None = strawberry.field(
        default=None,
        description="USD per unit, a multiple of the asset's priceIncrement: required for LIMIT and"
        " STOP_LIMIT, refused otherwise.",
    )
    stop_price: Decimal | None = strawberry.field(
        default=None,
        description="USD per unit, a multiple of the asset's priceIncrement: required for STOP and "
        "STOP_LIMIT, refused otherwise.",
    )
    time_in_force: TimeInForce = strawberry.field(
        default=TimeInForce.GTC,
        description="GTC by default; IOC and FOK only for MARKET and LIMIT; GTD needs expiresAt.",
    )
    expires_at: datetime | None = strawberry.field(default=None, description="GTD orders only.")
    client_order_id: str | None = strawberry.field(
        default=None,
        description="Your id: placing again with the same one returns the first order.",
    )

    def to_domain(self) -> OrderRequest:
        return OrderRequest(
            symbol=self.symbol,
            side=self.side,
            type=self.type,
            quantity=self.quantity,
            quote_quantity=self.quote_quantity,
            limit_price=self.limit_price,
            stop_price=self.stop_price,
            time_in_force=self.time_in_force,
            expires_at=self.expires_at,
            client_order_id=self.client_order_id,
        )


@strawberry.input(description="An administrator's credit or debit of paper funds.")
class AdjustBalanceInput:
    user_id: strawberry.ID = strawberry.field(
        description="The account to credit or debit (NOT_FOUND if unknown)."
    )
    asset: str = strawberry.field(description='"USD" or an asset symbol.')
    amount: Decimal = strawberry.field(description="Positive credits, negative debits.")
    reason: str = strawberry.field(description="Why, for the audit log (required, not blank).")
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Your unique key for this adjustment (1 to 100 characters): sending "
        "it again, even concurrently or after a timeout, applies it once and answers the "
        "same. Without one a retried request applies twice: always send one.",
    )


@strawberry.type(description="One asset's total over the whole ledger.")
class AssetTotal:
    asset: str = strawberry.field(description='"USD" or an asset symbol.')
    total: Decimal = strawberry.field(
        description="The sum of every ledger entry in that asset (Decimal): zero when the books "
        "balance."
    )


@strawberry.type(description="Whether the books balance: ok is true when nothing is listed.")
class Reconciliation:
    ok: bool = strawberry.field(
        description="True when the books balance and nothing is listed in discrepancies."
    )
    trial_balance: list[AssetTotal] = strawberry.field(
        description="The sum of every ledger entry per asset: always zero.",
        metadata=cost(list_size=11),
    )
    discrepancies: list[str] = strawberry.field(
        description="Each mismatch found, in words (balance vs. ledger, hold vs. open orders); "
        "empty when ok."
    )
    checked_balances: int = strawberry.field(
        description="How many balances were checked against the ledger."
    )
    checked_orders: int = strawberry.field(description="How many open orders' holds were checked.")

    @classmethod
    def from_domain(cls, report: Report) -> Reconciliation:
        return cls(
            ok=report.ok,
            trial_balance=[AssetTotal(asset=a, total=t) for a, t in report.trial_balance.items()],
            discrepancies=report.discrepancies,
            checked_balances=report.checked_balances,
            checked_orders=report.checked_orders,
        )


@strawberry.type
class TradingQuery:
    @strawberry.field(description="The viewer's balances.", permission_classes=PORTFOLIO_READ)
    async def account(self, info: Info) -> Account:
        return Account(balances=[Balance.from_domain(b) for b in await resolve.account(info)])

    @strawberry.field(
        description="The viewer's orders, newest first.",
        permission_classes=PORTFOLIO_READ,
        metadata=cost(max_page=ORDERS.maximum),
    )
    async def orders(
        self,
        info: Info,
        first: Annotated[int | None, first_argument(ORDERS)] = ORDERS.default,
        after: Annotated[str | None, AFTER] = None,
        status: Annotated[
            list[OrderStatus] | None,
            strawberry.argument(
                description="Only orders in these statuses (e.g. [OPEN, PARTIALLY_FILLED]); omit for all, "
                "an empty list is BAD_USER_INPUT."
            ),
        ] = None,
        symbol: Annotated[
            str | None,
            strawberry.argument(
                description='Only orders of this asset, e.g. "BTC"; unknown symbols are BAD_USER_INPUT.'
            ),
        ] = None,
    ) -> Connection[Order]:
        return connection(
            await resolve.orders(info, first, after, status, symbol), Order.from_domain
        )

    @strawberry.field(description="One of the viewer's orders.", permission_classes=PORTFOLIO_READ)
    async def order(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The order's id. Another user's order, or an unknown id, answers null."
            ),
        ],
    ) -> Order | None:
        doc = await resolve.order(info, str(id))
        return Order.from_domain(doc) if doc is not None else None

    @strawberry.field(
        description="The viewer's fills, newest first.",
        permission_classes=PORTFOLIO_READ,
        metadata=cost(max_page=TRADES.maximum),
    )
    async def trades(
        self,
        info: Info,
        first: Annotated[int | None, first_argument(TRADES)] = TRADES.default,
        after: Annotated[str | None, AFTER] = None,
        symbol: Annotated[
            str | None,
            strawberry.argument(
                description='Only fills of this asset, e.g. "BTC"; unknown symbols are BAD_USER_INPUT.'
            ),
        ] = None,
    ) -> Connection[Trade]:
        return connection(await resolve.trades(info, first, after, symbol), Trade.from_domain)

    @strawberry.field(
        description="The viewer's ledger entries, newest first.",
        permission_classes=PORTFOLIO_READ,
        metadata=cost(max_page=LEDGER.maximum),
    )
    async def ledger(
        self,
        info: Info,
        first: Annotated[int | None, first_argument(LEDGER)] = LEDGER.default,
        after: Annotated[str | None, AFTER] = None,
        asset: Annotated[
            str | None,
            strawberry.argument(
                description='"USD" or an asset symbol: only entries in it. Unknown symbols are '
                "BAD_USER_INPUT."
            ),
        ] = None,
    ) -> Connection[LedgerEntry]:
        return connection(await resolve.ledger(info, first, after, asset), LedgerEntry.from_domain)

    @strawberry.field(
        description="Admin: trial balance, cached balances vs. ledger, holds vs. open orders.",
        permission_classes=ADMIN,
    )
    async def reconciliation(self, info: Info) -> Reconciliation:
        return Reconciliation.from_domain(await resolve.reconciliation(info))


@strawberry.type
class TradingMutation:
    @strawberry.mutation(
        description="Place an order. Funds are reserved at once (INSUFFICIENT_FUNDS if not "
        "available: nothing is held and the order is recorded REJECTED); what the current "
        "price fills is filled before the answer, so the answer shows those fills and the "
        "order's status after placement. Later fills come from the price feed.",
        permission_classes=TRADE,
    )
    async def place_order(
        self,
        info: Info,
        input: Annotated[PlaceOrderInput, strawberry.argument(description="The order.")],
    ) -> Order:
        return Order.from_domain(await resolve.place_order(info, input.to_domain()))

    @strawberry.mutation(
        description="Cancel an OPEN or PARTIALLY_FILLED order; releases what it still holds. "
        "An order being placed or filled is canceled by its owner right after (the answer "
        "has cancelRequested: true while that is under way).",
        permission_classes=TRADE,
    )
    async def cancel_order(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The order's id: NOT_FOUND for another user's or an unknown id; CONFLICT when "
                "it is no longer open (already filled, canceled, rejected or expired)."
            ),
        ],
    ) -> Order:
        return Order.from_domain(await resolve.cancel_order(info, str(id)))

    @strawberry.mutation(
        description="Admin: credit or debit paper funds through the ledger, once per "
        "idempotencyKey. Audited.",
        permission_classes=ADMIN,
    )
    async def adjust_balance(
        self,
        info: Info,
        input: Annotated[
            AdjustBalanceInput,
            strawberry.argument(description="The adjustment, with its idempotencyKey."),
        ],
    ) -> Balance:
        return Balance.from_domain(
            await resolve.adjust_balance(
                info,
                str(input.user_id),
                input.asset,
                input.amount,
                input.reason,
                input.idempotency_key,
            )
        )


@strawberry.type
class TradingSubscription:
    @strawberry.subscription(
        description="The viewer's orders on every state change. " + PRIVATE_STREAM_ENDS,
        permission_classes=PORTFOLIO_READ,
    )
    async def order_updates(self, info: Info) -> AsyncGenerator[Order]:
        async for doc in resolve.order_stream(info):
            yield Order.from_domain(doc)
