"""What each tick offers at the top of the book, shared by every instance.

A tick offers TOP_OF_BOOK_USD of its asset (at its price, floored to the quantity
increment). Every fill on that tick, whichever instance makes it (a placement on any
instance, the leader's matcher), takes its quantity from the same budget, keyed by
(symbol, tick time): in Redis when configured (one atomic script), otherwise in this
process (one instance). A fill that is then not made (its order was taken over, or
turned out not to be fillable) gives its quantity back."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Protocol

import redis.asyncio as aioredis

from cryptovault.market.assets import get_asset
from cryptovault.market.ticks import Tick

log = logging.getLogger(__name__)

ZERO = Decimal(0)
KEEP_SECONDS = 120  # a tick's budget outlives any fill made on it

# KEYS[1] budget; ARGV: initial units, wanted units, ttl seconds. Returns units granted.
_TAKE = """
local left = redis.call('get', KEYS[1])
if not left then
  left = tonumber(ARGV[1])
  redis.call('set', KEYS[1], left, 'EX', ARGV[3])
else
  left = tonumber(left)
end
local granted = math.min(left, tonumber(ARGV[2]))
if granted > 0 then redis.call('decrby', KEYS[1], granted) end
return granted
"""


# KEYS[1] budget; ARGV: units. Only a live budget takes quantity back (one that
# expired stays gone rather than coming back without an expiry).
_GIVE_BACK = """
if redis.call('exists', KEYS[1]) == 1 then return redis.call('incrby', KEYS[1], ARGV[1]) end
return 0
"""


class LiquidityBook(Protocol):
    async def take(self, tick: Tick, wanted: Decimal) -> Decimal: ...

    async def give_back(self, tick: Tick, quantity: Decimal) -> None: ...

    async def left(self, tick: Tick) -> Decimal: ...


def offered(tick: Tick, top_of_book_usd: Decimal) -> Decimal:
    """Base units a tick offers in all."""
    return get_asset(tick.symbol).floor_quantity(top_of_book_usd / tick.price)


def _units(symbol: str, quantity: Decimal) -> int:
    return int(quantity / get_asset(symbol).quantity_increment)


def _quantity(symbol: str, units: int) -> Decimal:
    return get_asset(symbol).quantity_increment * units


class MemoryLiquidity:
    """One instance's book: the latest tick of each symbol and what it has left."""

    def __init__(self, top_of_book_usd: Decimal) -> None:
        self.top_of_book_usd = top_of_book_usd
        self._left: dict[str, tuple[object, Decimal]] = {}

    def _budget(self, tick: Tick) -> Decimal:
        seen = self._left.get(tick.symbol)
        if seen is None or seen[0] != tick.timestamp:
            return offered(tick, self.top_of_book_usd)
        return seen[1]

    async def take(self, tick: Tick, wanted: Decimal) -> Decimal:
        granted = max(ZERO, min(wanted, self._budget(tick)))
        self._left[tick.symbol] = (tick.timestamp, self._budget(tick) - granted)
        return granted

    async def give_back(self, tick: Tick, quantity: Decimal) -> None:
        seen = self._left.get(tick.symbol)
        if seen is not None and seen[0] == tick.timestamp:
            self._left[tick.symbol] = (tick.timestamp, seen[1] + quantity)

    async def left(self, tick: Tick) -> Decimal:
        return self._budget(tick)


class RedisLiquidity:
    """Every instance's book, in Redis."""

    def __init__(self, redis: aioredis.Redis, prefix: str, top_of_book_usd: Decimal) -> None:
        self.redis = redis
        self.prefix = prefix
        self.top_of_book_usd = top_of_book_usd
        self._take = redis.register_script(_TAKE)
        self._give_back = redis.register_script(_GIVE_BACK)

    def _key(self, tick: Tick) -> str:
        return f"{self.prefix}liquidity:{tick.symbol}:{int(tick.timestamp.timestamp() * 1000)}"

    async def take(self, tick: Tick, wanted: Decimal) -> Decimal:
        if wanted <= 0:
            return ZERO
        initial = _units(tick.symbol, offered(tick, self.top_of_book_usd))
        try:
            granted = await self._take(
                keys=[self._key(tick)],
                args=[initial, _units(tick.symbol, wanted), KEEP_SECONDS],
            )
        except Exception as exc:
            # Without the shared book nothing may fill (it could be sold twice): the
            # order waits for a later tick.
            log.warning("liquidity book unreachable", extra={"error": repr(exc)})
            return ZERO
        return _quantity(tick.symbol, int(granted))

    async def give_back(self, tick: Tick, quantity: Decimal) -> None:
        if quantity <= 0:
            return
        try:
            await self._give_back(keys=[self._key(tick)], args=[_units(tick.symbol, quantity)])
        except Exception as exc:  # only this tick's remaining offer is understated
            log.warning("could not return liquidity", extra={"error": repr(exc)})

    async def left(self, tick: Tick) -> Decimal:
        value = await self.redis.get(self._key(tick))
        if value is None:
            return offered(tick, self.top_of_book_usd)
        return _quantity(tick.symbol, int(value))
