"""Matching, pure: whether a tick crosses an order, at what price, and who pays the
maker fee.

Fills come only from the feed: market orders take the ask (buy) or bid (sell); limit
orders fill when that price is at their limit or better, at that price; stops trigger
on the last price and then behave as a market (STOP) or limit (STOP_LIMIT) order.
A fill is MAKER only for a limit order that rested (was answered OPEN on placement,
or triggered on an earlier tick) and is filled by a later tick; everything else takes
liquidity (TAKER)."""

from __future__ import annotations

from decimal import Decimal

from cryptovault.market.ticks import Tick
from cryptovault.trading.enums import Liquidity, OrderType, Side


def stop_crossed(side: Side, stop_price: Decimal, tick: Tick) -> bool:
    """A buy stop triggers when the last price rises to it, a sell stop when it falls to it."""
    return tick.price >= stop_price if side is Side.BUY else tick.price <= stop_price


def execution_price(
    side: Side, kind: OrderType, limit_price: Decimal | None, triggered: bool, tick: Tick
) -> Decimal | None:
    """The price this tick fills the order at, or None if it does not cross."""
    if kind.has_stop and not triggered:
        return None
    market = tick.ask if side is Side.BUY else tick.bid
    if not kind.has_limit:
        return market
    assert limit_price is not None
    crosses = market <= limit_price if side is Side.BUY else market >= limit_price
    return market if crosses else None


def liquidity(kind: OrderType, resting: bool) -> Liquidity:
    """`resting`: the order was open before this tick (not placed or triggered by it)."""
    return Liquidity.MAKER if kind.has_limit and resting else Liquidity.TAKER
