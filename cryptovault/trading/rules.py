"""Trading rules, pure: what an order may be, what it holds, and what a price fills.

One rounding policy, shared by holds, affordability and fills:
- USD is charged per order on a cumulative basis. After any fills, a buy has paid
  ceil(S) for its notional S = sum(q x p) and ceil(B) in fees, B = sum(q x p x rate);
  a sale has received floor(S) and paid ceil(B). Each fill pays the difference, so an
  order split into many fills pays what one fill of the same size would, to the cent.
- A buy of Q at a highest price P holds ceil(Q x P) + ceil(Q x P x the highest fee
  rate). Every fill at a price <= P therefore fits in what is left of the hold; a
  market or stop buy that meets a price above P fills what its hold pays for.

One sizing policy: an order's unfilled quantity is zero or tradable (at least
minSize). A fill takes the whole remainder, or leaves a tradable one, and is itself
tradable (minSize and minNotional). What cannot trade any more is closed (FILLED when
only dust is left, else CANCELED with the reason) and the rest of its hold released:
no order waits for a fill that can never come.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from cryptovault.documents.common import to_decimal
from cryptovault.documents.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from cryptovault.errors import BadUserInput
from cryptovault.market.assets import Asset, get_asset
from cryptovault.market.ticks import Tick

CENT = Decimal("0.01")
ZERO = Decimal(0)
USD = "USD"
# The largest quantity, price or USD amount an order or adjustment may name, and the
# largest order value: far beyond any paper account, and small enough that every
# amount derived from them (holds, fees, totals) stays exact in 28-digit Decimal
# arithmetic and in Decimal128 (beyond it, Decimal raises instead of answering).
MAX_AMOUNT = Decimal("1e12")
MAX_NOTIONAL = Decimal("1e15")


def ceil_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_CEILING)


def floor_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_FLOOR)


@dataclass(frozen=True, slots=True)
class Fees:
    taker: Decimal
    maker: Decimal
    # Market (and stop) buys hold for a price this much above the ask (or stop).
    slippage: Decimal

    @property
    def highest(self) -> Decimal:
        return max(self.taker, self.maker)

    def rate(self, liquidity: Liquidity) -> Decimal:
        return self.taker if liquidity is Liquidity.TAKER else self.maker


@dataclass(frozen=True, slots=True)
class OrderRequest:
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    expires_at: datetime | None = None
    client_order_id: str | None = None


def check_amount(value: Decimal, step: Decimal, field: str) -> None:
    """A positive multiple of `step`, at most MAX_AMOUNT, or BAD_USER_INPUT naming `field`."""
    if not value.is_finite() or value <= 0:
        raise BadUserInput(f"{field} must be positive", field=field)
    if value > MAX_AMOUNT:
        raise BadUserInput(f"{field} must be at most {MAX_AMOUNT:,.0f}", field=field)
    if value % step != 0:
        raise BadUserInput(
            f"{field} must be a multiple of {step}", field=field, increment=str(step)
        )


def validate(req: OrderRequest, tick: Tick | None, now: datetime | None = None) -> Asset:
    """The order's asset, or BAD_USER_INPUT naming what is wrong with it."""
    asset = get_asset(req.symbol)
    if (req.quantity is None) == (req.quote_quantity is None):
        raise BadUserInput("Give exactly one of quantity and quoteQuantity", field="quantity")
    if req.quote_quantity is not None:
        if not (req.type is OrderType.MARKET and req.side is Side.BUY):
            raise BadUserInput("quoteQuantity is only for market buys", field="quoteQuantity")
        check_amount(req.quote_quantity, CENT, "quoteQuantity")
    if req.quantity is not None:
        check_amount(req.quantity, asset.quantity_increment, "quantity")
        if req.quantity < asset.min_size:
            raise BadUserInput(
                f"quantity is below the minimum size {asset.min_size}", field="quantity"
            )
    for name, needed, price in (
        ("limitPrice", req.type.has_limit, req.limit_price),
        ("stopPrice", req.type.has_stop, req.stop_price),
    ):
        if needed != (price is not None):
            raise BadUserInput(
                f"{name} is {'required' if needed else 'not allowed'} for {req.type}",
                field=name,
            )
        if price is not None:
            check_amount(price, asset.price_increment, name)
    if req.time_in_force is TimeInForce.GTD:
        if req.expires_at is None or req.expires_at <= (now or datetime.now(UTC)):
            raise BadUserInput("GTD orders need an expiresAt in the future", field="expiresAt")
    elif req.expires_at is not None:
        raise BadUserInput("expiresAt is only for GTD orders", field="expiresAt")
    if req.time_in_force.immediate and req.type not in (OrderType.MARKET, OrderType.LIMIT):
        raise BadUserInput(f"{req.time_in_force} is for market and limit orders")
    if req.client_order_id is not None and not 1 <= len(req.client_order_id) <= 64:
        raise BadUserInput("clientOrderId must be 1 to 64 characters", field="clientOrderId")
    if tick is None and req.type is OrderType.MARKET:
        raise BadUserInput(f"No price for {asset.symbol} yet: try again shortly")
    reference = req.limit_price or req.stop_price or (tick.price if tick else None)
    if reference is not None:
        notional = req.quote_quantity or (req.quantity or ZERO) * reference
        if notional > MAX_NOTIONAL:
            raise BadUserInput(
                f"order value is above the maximum of {MAX_NOTIONAL:,.0f} USD", field="quantity"
            )
        if notional < asset.min_notional:
            raise BadUserInput(
                f"order value is below the minimum of {asset.min_notional} USD", field="quantity"
            )
    return asset


def buy_hold(quantity: Decimal, price: Decimal, fees: Fees) -> Decimal:
    """What a buy of `quantity` at up to `price` holds: enough for any split into fills
    at any price up to `price`, at any fee rate."""
    notional = quantity * price
    return ceil_cents(notional) + ceil_cents(notional * fees.highest)


def hold_for(req: OrderRequest, asset: Asset, tick: Tick | None, fees: Fees) -> tuple[str, Decimal]:
    """The asset and amount an order reserves when placed."""
    if req.side is Side.SELL:
        assert req.quantity is not None
        return asset.symbol, req.quantity
    if req.quote_quantity is not None:
        return USD, req.quote_quantity
    assert req.quantity is not None
    if req.type.has_limit:
        assert req.limit_price is not None
        return USD, buy_hold(req.quantity, req.limit_price, fees)
    base = req.stop_price if req.type is OrderType.STOP else tick.ask if tick else None
    assert base is not None
    return USD, buy_hold(req.quantity, base * (1 + fees.slippage), fees)


@dataclass(frozen=True, slots=True)
class OrderState:
    """What sizing needs to know of an order (read from its document)."""

    side: Side
    type: OrderType
    quantity: Decimal | None  # None: a quote-quantity buy (spends its hold)
    filled: Decimal
    spent: Decimal  # sum of quantity x price of its fills
    fee_basis: Decimal  # sum of quantity x price x fee rate of its fills
    held: Decimal  # what is left of its hold

    @property
    def remaining(self) -> Decimal | None:
        return None if self.quantity is None else self.quantity - self.filled

    @classmethod
    def of(cls, doc: dict[str, Any]) -> OrderState:
        quantity = doc.get("quantity")
        return cls(
            side=Side(doc["side"]),
            type=OrderType(doc["type"]),
            quantity=None if quantity is None else to_decimal(quantity),
            filled=to_decimal(doc.get("filled_quantity", 0)),
            spent=to_decimal(doc.get("spent_quote", 0)),
            fee_basis=fee_basis_of(doc),
            held=to_decimal(doc.get("hold_remaining", 0)),
        )


def fee_basis_of(doc: dict[str, Any]) -> Decimal:
    # Orders written before the cumulative policy kept only the fees charged: those
    # stand in for the basis (it can only be lower), so no fee is charged twice.
    basis = doc.get("fee_basis")
    return to_decimal(basis if basis is not None else doc.get("fees", 0))


@dataclass(frozen=True, slots=True)
class Fill:
    """A fill to make (quantity > 0) and/or a close to make (`close` set), as planned
    before anything is written: completing it is mechanical, so whoever completes it
    (the planner, or the recovery sweep after a crash) writes the same."""

    quantity: Decimal
    price: Decimal
    cash: Decimal  # USD paid (buy) or received (sale) for the quantity, fee excluded
    fee: Decimal
    fee_basis: Decimal  # quantity x price x rate, unrounded
    liquidity: Liquidity
    held_used: Decimal  # taken from the order's hold: cash + fee (buy), quantity (sale)
    release: Decimal  # what is left of the hold, back to available when it closes
    close: OrderStatus | None = None
    reason: str | None = None

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.price


def charge(
    order: OrderState, quantity: Decimal, price: Decimal, rate: Decimal
) -> tuple[Decimal, Decimal]:
    """(cash, fee) of filling `quantity` at `price` next, under the cumulative policy."""
    spent, basis = order.spent, order.fee_basis
    notional = quantity * price
    if order.side is Side.BUY:
        cash = ceil_cents(spent + notional) - ceil_cents(spent)
    else:
        cash = floor_cents(spent + notional) - floor_cents(spent)
    fee = ceil_cents(basis + notional * rate) - ceil_cents(basis)
    return cash, fee


def affordable(
    order: OrderState, asset: Asset, price: Decimal, rate: Decimal, cap: Decimal | None = None
) -> Decimal:
    """The largest quantity (up to `cap`) a buy's remaining hold pays for at `price`,
    fee included: exact, as the charge only grows with the quantity."""
    if order.held <= 0:
        return ZERO
    step = asset.quantity_increment
    # Cumulative rounding can make a fill cost up to two cents less than q x p x (1 + rate).
    high = int((order.held + 2 * CENT) / (price * (1 + rate)) / step)
    if cap is not None:
        high = min(high, int(cap / step))
    low = 0
    while low < high:
        middle = (low + high + 1) // 2
        if sum(charge(order, step * middle, price, rate)) <= order.held:
            low = middle
        else:
            high = middle - 1
    return step * low


def _tradable(asset: Asset, quantity: Decimal, price: Decimal) -> bool:
    return quantity >= asset.min_size and quantity * price >= asset.min_notional


def close_plan(order: OrderState, status: OrderStatus, reason: str | None) -> Fill:
    """Close without a fill: release the whole remaining hold."""
    return Fill(
        quantity=ZERO,
        price=ZERO,
        cash=ZERO,
        fee=ZERO,
        fee_basis=ZERO,
        liquidity=Liquidity.TAKER,
        held_used=ZERO,
        release=order.held,
        close=status,
        reason=reason,
    )


def plan_fill(
    order: OrderState,
    asset: Asset,
    price: Decimal,
    offered: Decimal,
    liquidity: Liquidity,
    fees: Fees,
    *,
    immediate: TimeInForce | None = None,
) -> Fill | None:
    """What `price` does to the order with `offered` base units on offer: a fill (maybe
    closing the order), a close, or None (nothing now; wait for a later price).

    `immediate` (IOC or FOK, on placement only): the order is decided now; what does
    not fill is canceled, and a FOK fills whole or not at all."""
    rate = fees.rate(liquidity)
    want = order.remaining  # None: a quote-quantity buy, which spends its hold
    offered = asset.floor_quantity(max(offered, ZERO))
    cap = offered if want is None else min(want, offered)
    afford = affordable(order, asset, price, rate, cap) if order.side is Side.BUY else None
    quantity = cap if afford is None else min(cap, afford)
    # The hold, not the book, stops this buy: it cannot fill more at this price (a
    # market or stop buy meeting a price above what it held for).
    short_of_funds = afford is not None and afford < cap
    waits = not short_of_funds and immediate is None
    if waits and want is not None and quantity < want and want - quantity < asset.min_size:
        quantity = want - asset.min_size  # leave a tradable remainder for later ticks
    if not (want is not None and quantity == want) and not _tradable(asset, quantity, price):
        quantity = ZERO  # never a dust fill
    cash, fee = charge(order, quantity, price, rate) if quantity > 0 else (ZERO, ZERO)
    if order.side is Side.SELL and cash < fee:
        # Proceeds below the fee: what is left is too small to sell.
        return close_plan(order, OrderStatus.CANCELED, "the remainder is too small to sell")
    held_used = (cash + fee if order.side is Side.BUY else quantity) if quantity > 0 else ZERO
    left = order.held - held_used
    if want is not None:
        rest_is_dust = want - quantity < asset.min_size
    else:
        after = OrderState(
            order.side,
            order.type,
            None,
            order.filled + quantity,
            order.spent + quantity * price,
            order.fee_basis + quantity * price * rate,
            left,
        )
        smallest = max(asset.min_size, asset.min_notional / price)
        rest_is_dust = affordable(after, asset, price, rate) < smallest
    close: OrderStatus | None = None
    reason: str | None = None
    whole = quantity == want if want is not None else rest_is_dust and quantity > 0
    if immediate is TimeInForce.FOK and not whole:
        return close_plan(order, OrderStatus.CANCELED, "FOK: not fully fillable now")
    if rest_is_dust and (quantity > 0 or order.filled > 0):
        close = OrderStatus.FILLED
    elif immediate is TimeInForce.IOC:
        close, reason = OrderStatus.CANCELED, "IOC: remainder canceled"
    elif short_of_funds or rest_is_dust:
        close, reason = OrderStatus.CANCELED, "the funds held do not cover the rest at this price"
    if quantity <= 0:
        return close_plan(order, close, reason) if close is not None else None
    return Fill(
        quantity=quantity,
        price=price,
        cash=cash,
        fee=fee,
        fee_basis=quantity * price * rate,
        liquidity=liquidity,
        held_used=held_used,
        release=left if close is not None else ZERO,
        close=close,
        reason=reason,
    )
