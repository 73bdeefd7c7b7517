"""Matching, pure: whether a tick crosses an order, at what price, and who pays the
maker fee.

Fills come only from the feed: market orders take the ask (buy) or bid (sell); limit
orders fill when that price is at their limit or better, at that price; stops trigger
on the last price and then behave as a market (STOP) or limit (STOP_LIMIT) order.
A fill is MAKER only for a limit order that rested (was answered OPEN on placement,
or triggered on an earlier tick) and is filled by a later tick; everything else takes
liquidity (TAKER).

`crossing(tick, now)` is the same rule as a store filter: the matcher reads only the
resting orders a tick can fill or trigger (and the expired ones it closes), not every
open order of the symbol."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from bson import Decimal128

from cryptovault.documents.enums import Liquidity, OrderType, Side, TimeInForce
from cryptovault.market.ticks import Tick


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


def crossing(tick: Tick, now: datetime) -> dict[str, Any]:
    """A filter for the resting orders this tick may act on, as `execution_price`,
    `stop_crossed` and the expiry check decide: a superset is harmless (each order is
    checked again), a subset would leave an order unfilled."""
    ask, bid, last = Decimal128(tick.ask), Decimal128(tick.bid), Decimal128(tick.price)
    limits: list[dict[str, Any]] = [
        {"type": OrderType.LIMIT.value},
        {"type": OrderType.STOP_LIMIT.value, "triggered": True},
    ]
    stops = [OrderType.STOP.value, OrderType.STOP_LIMIT.value]
    return {
        "$or": [
            # Market orders, and stops that became one: any tick fills them.
            {"type": OrderType.MARKET.value},
            {"type": OrderType.STOP.value, "triggered": True},
            # Limits (and triggered stop-limits) the tick's ask or bid reaches.
            *({"side": Side.BUY.value, "limit_price": {"$gte": ask}, **kind} for kind in limits),
            *({"side": Side.SELL.value, "limit_price": {"$lte": bid}, **kind} for kind in limits),
            # Untriggered stops the last price reaches.
            *(
                {"type": kind, "triggered": {"$ne": True}, "side": side, "stop_price": bound}
                for kind in stops
                for side, bound in (
                    (Side.BUY.value, {"$lte": last}),
                    (Side.SELL.value, {"$gte": last}),
                )
            ),
            # Past expiresAt: closed on the tick, whatever its price.
            {"time_in_force": TimeInForce.GTD.value, "expires_at": {"$lte": now}},
        ]
    }
