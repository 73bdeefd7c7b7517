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
open order of the symbol. It filters on one string per order, `match_key`
(`match_key()`: what moves the order, and at what price), so each of its branches is
one range of the `(symbol, status, match_key)` index, on MongoDB and on the embedded
store alike (which cannot range over a Decimal128 through an index)."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_FLOOR, Context, Decimal, localcontext
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


# A price key: the price x 10^18, floored, in 31 digits. Every price the API accepts
# (a positive multiple of its asset's price increment, at most rules.MAX_AMOUNT = 10^12,
# increments of at most 18 decimals) has an exact key, and keys sort as the prices do.
# Any other price (a tick's, a stored one) is floored to 18 decimals and clamped to
# [0, 10^13): both are monotone, so `a <= b` implies key(a) <= key(b) and a filter on
# keys with `<=`/`>=` is a superset of the same filter on prices; the matcher checks
# each order it reads with the exact Decimal (TradingEngine._match_one).
KEY_DECIMALS = 18
KEY_DIGITS = 31  # 13 before the point: 10^12 itself
_KEY_CONTEXT = Context(prec=80)
_KEY_MAX = 10**KEY_DIGITS - 1

# The first letter of a match key: what the order waits for.
ANY = "A"  # nothing: a market order, a triggered stop (any tick fills it)
BUY_LIMIT = "B"  # the ask at or below its limit (a limit, a triggered stop-limit)
SELL_LIMIT = "S"  # the bid at or above its limit
BUY_STOP = "U"  # the last price up to its stop (not triggered yet)
SELL_STOP = "D"  # the last price down to its stop


def price_key(price: Decimal) -> str:
    """A string that sorts as `price` does (exactly for every accepted price)."""
    if price.is_nan():
        raise ValueError("a price key of NaN")
    if price.is_infinite():
        return f"{0 if price < 0 else _KEY_MAX:0{KEY_DIGITS}d}"
    with localcontext(_KEY_CONTEXT):
        scaled = int(price.scaleb(KEY_DECIMALS).to_integral_value(ROUND_FLOOR))
    return f"{min(max(scaled, 0), _KEY_MAX):0{KEY_DIGITS}d}"


def match_key(
    kind: OrderType,
    side: Side,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
    triggered: bool,
) -> str:
    """What an open order waits for, as `crossing` filters it: written when the order
    is placed and when its stop triggers (the only changes of what it waits for)."""
    if kind.has_stop and not triggered:
        assert stop_price is not None
        return (BUY_STOP if side is Side.BUY else SELL_STOP) + price_key(stop_price)
    if not kind.has_limit:
        return ANY
    assert limit_price is not None
    return (BUY_LIMIT if side is Side.BUY else SELL_LIMIT) + price_key(limit_price)


def match_key_of(doc: dict[str, Any], triggered: bool | None = None) -> str:
    """`match_key` of a stored order (`triggered`: as it is about to be written)."""

    def price(name: str) -> Decimal | None:
        value = doc.get(name)
        return value.to_decimal() if isinstance(value, Decimal128) else value

    return match_key(
        OrderType(doc["type"]),
        Side(doc["side"]),
        price("limit_price"),
        price("stop_price"),
        bool(doc.get("triggered")) if triggered is None else triggered,
    )


def crossing(tick: Tick, now: datetime) -> dict[str, Any]:
    """A filter for the resting orders this tick may act on, as `execution_price`,
    `stop_crossed` and the expiry check decide: a superset is harmless (each order is
    checked again), a subset would leave an order unfilled. Each branch but the last
    is one range of `match_key`."""
    ask, bid, last = price_key(tick.ask), price_key(tick.bid), price_key(tick.price)

    def after(letter: str) -> str:
        return chr(ord(letter) + 1)

    return {
        "$or": [
            {"match_key": ANY},
            # A buy limit fills when the ask is at or below it, a sell limit when the
            # bid is at or above it; a buy stop triggers when the last price rises to
            # it, a sell stop when it falls to it.
            {"match_key": {"$gte": BUY_LIMIT + ask, "$lt": after(BUY_LIMIT)}},
            {"match_key": {"$gte": SELL_LIMIT, "$lte": SELL_LIMIT + bid}},
            {"match_key": {"$gte": BUY_STOP, "$lte": BUY_STOP + last}},
            {"match_key": {"$gte": SELL_STOP + last, "$lt": after(SELL_STOP)}},
            # Placed before match keys existed and not migrated yet (migration 0003):
            # read on every tick, as before.
            {"match_key": None},
            # Past expiresAt: closed on the tick, whatever its price.
            {"time_in_force": TimeInForce.GTD.value, "expires_at": {"$lte": now}},
        ]
    }
