"""The sizing and rounding rules, for any order, price, book and split into fills: a
fill never costs more than what is left of its hold, never leaves or makes dust, a
sale never pays out less than nothing, FOK is all or nothing, and an order filled at
prices within what it held for always completes (never stuck a cent short)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from cryptovault.documents.enums import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from cryptovault.market.assets import ASSETS
from cryptovault.trading.rules import (
    ZERO,
    Fees,
    OrderRequest,
    OrderState,
    buy_hold,
    ceil_cents,
    hold_for,
    plan_fill,
)

FEES = Fees(taker=Decimal("0.002"), maker=Decimal("0.001"), slippage=Decimal("0.01"))
BTC, DOGE = ASSETS["BTC"], ASSETS["DOGE"]


def prices(low: str, high: str, places: int = 2) -> st.SearchStrategy[Decimal]:
    return st.decimals(Decimal(low), Decimal(high), places=places)


def after(order: OrderState, fill) -> OrderState:
    rate = FEES.rate(fill.liquidity)
    return OrderState(
        order.side,
        order.type,
        order.quantity,
        order.filled + fill.quantity,
        order.spent + fill.quantity * fill.price,
        order.fee_basis + fill.quantity * fill.price * rate,
        order.held - fill.held_used - fill.release,
    )


@st.composite
def orders(draw: st.DrawFn) -> tuple[OrderState, object]:
    asset = draw(st.sampled_from([BTC, DOGE]))
    side = draw(st.sampled_from(Side))
    if side is Side.SELL:
        units = draw(st.integers(int(asset.min_size / asset.quantity_increment), 10**9))
        quantity = asset.quantity_increment * units
        state = OrderState(side, OrderType.MARKET, quantity, ZERO, ZERO, ZERO, quantity)
        return state, asset
    if draw(st.booleans()):
        held = draw(st.decimals(Decimal("1.00"), Decimal("100000.00"), places=2))
        return OrderState(side, OrderType.MARKET, None, ZERO, ZERO, ZERO, held), asset
    units = draw(st.integers(int(asset.min_size / asset.quantity_increment), 10**9))
    quantity = asset.quantity_increment * units
    reference = draw(prices("0.01", "200000")) if asset is BTC else draw(prices("0.01", "2", 5))
    held = buy_hold(quantity, reference, FEES)
    return OrderState(side, OrderType.LIMIT, quantity, ZERO, ZERO, ZERO, held), asset


@settings(max_examples=400, deadline=None)
@given(
    order_asset=orders(),
    price=prices("0.01", "300000"),
    offered=st.decimals(Decimal(0), Decimal(1000), places=8),
    liquidity=st.sampled_from(Liquidity),
    immediate=st.sampled_from([None, TimeInForce.IOC, TimeInForce.FOK]),
)
def test_a_fill_fits_its_hold_and_leaves_no_dust(order_asset, price, offered, liquidity, immediate):
    order, asset = order_asset
    price = asset.floor_price(price) or asset.price_increment
    fill = plan_fill(order, asset, price, offered, liquidity, FEES, immediate=immediate)
    if fill is None:
        assert immediate is None  # IOC and FOK are always decided on placement
        return
    assert fill.quantity >= 0 and fill.quantity % asset.quantity_increment == 0
    assert fill.quantity <= asset.floor_quantity(offered)
    assert fill.held_used + fill.release <= order.held
    assert fill.release == (order.held - fill.held_used if fill.close else 0)
    if fill.quantity > 0:
        left = order.remaining
        assert fill.quantity >= asset.min_size or fill.quantity == left
        if order.side is Side.BUY:
            assert fill.held_used == fill.cash + fill.fee
        else:
            assert fill.held_used == fill.quantity and fill.cash >= fill.fee
    if order.remaining is not None and fill.close is None:
        assert order.remaining - fill.quantity >= asset.min_size
    if immediate is TimeInForce.FOK:  # whole or nothing
        assert fill.quantity == 0 or (
            fill.close is OrderStatus.FILLED
            and (order.remaining is None or fill.quantity == order.remaining)
        )
    if immediate is not None:
        assert fill.close is not None


@settings(max_examples=300, deadline=None)
@given(
    units=st.integers(1, 10**6),
    limit=prices("1", "150000"),
    path=st.lists(
        st.tuples(
            st.decimals(Decimal("0.5"), Decimal(1), places=4),  # price as a share of the limit
            st.decimals(Decimal(0), Decimal(3), places=8),  # book offered, BTC
            st.sampled_from(Liquidity),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_a_limit_buy_filled_at_or_below_its_limit_completes_within_its_hold(units, limit, path):
    """However the book splits it and whatever the prices (at or below the limit), the
    order ends FILLED, paying at most its hold: it is never left a cent short."""
    quantity = BTC.min_size + BTC.quantity_increment * units
    request = OrderRequest(
        symbol="BTC", side=Side.BUY, type=OrderType.LIMIT, quantity=quantity, limit_price=limit
    )
    _, hold = hold_for(request, BTC, None, FEES)
    order = OrderState(Side.BUY, OrderType.LIMIT, quantity, ZERO, ZERO, ZERO, hold)
    paid = released = ZERO
    for share, offered, liquidity in [*path, (Decimal(1), Decimal(10**6), Liquidity.TAKER)]:
        price = BTC.floor_price(limit * share)
        fill = plan_fill(order, BTC, price, offered, liquidity, FEES)
        if fill is None:
            continue
        assert fill.close is not OrderStatus.CANCELED, "stuck short of funds"
        paid += fill.held_used
        released += fill.release
        order = after(order, fill)
        if fill.close is OrderStatus.FILLED:
            break
    assert order.filled == quantity
    assert paid <= hold and paid + released == hold and order.held == 0
    # Cumulative rounding: what one fill of the whole notional would have cost.
    assert paid == ceil_cents(order.spent) + ceil_cents(order.fee_basis)


def test_the_quote_quantity_buy_of_issue_11_fits_its_thousand_dollars():
    """quoteQuantity 1,000.00 at ask 91,265.79 was sized 998.01 + 2.00 fee = 1,000.01."""
    order = OrderState(Side.BUY, OrderType.MARKET, None, ZERO, ZERO, ZERO, Decimal("1000.00"))
    fill = plan_fill(order, BTC, Decimal("91265.79"), Decimal(10), Liquidity.TAKER, FEES)
    assert fill is not None and fill.close is OrderStatus.FILLED
    assert fill.cash + fill.fee <= Decimal("1000.00")
    assert fill.cash + fill.fee + fill.release == Decimal("1000.00")


def test_a_sale_whose_proceeds_would_not_cover_its_fee_is_closed_not_paid_negative():
    """A dust sale used to credit proceeds minus a full cent fee: a negative payout."""
    order = OrderState(Side.SELL, OrderType.MARKET, Decimal("10"), ZERO, ZERO, ZERO, Decimal("10"))
    fill = plan_fill(order, DOGE, Decimal("0.00010"), Decimal(100), Liquidity.TAKER, FEES)
    assert fill is not None and fill.quantity == 0
    assert fill.close is OrderStatus.CANCELED and fill.release == Decimal("10")
