"""Event counters over the last 24 hours, in hourly buckets: in Redis when configured
(shared by every instance), otherwise in this process. Used for admin statistics such
as rate-limit rejections, which are not stored anywhere else."""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

HOUR = 3600
BUCKETS = 24


class HourlyCounters:
    def __init__(self, redis: aioredis.Redis | None = None, prefix: str = "counters:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._memory: dict[str, dict[int, int]] = defaultdict(dict)

    def _key(self, name: str, hour: int) -> str:
        return f"{self.prefix}{name}:{hour}"

    async def incr(self, name: str, amount: int = 1) -> None:
        hour = int(time.time()) // HOUR
        if self.redis is None:
            buckets = self._memory[name]
            buckets[hour] = buckets.get(hour, 0) + amount
            for old in [h for h in buckets if h <= hour - BUCKETS]:
                del buckets[old]
            return
        try:
            key = self._key(name, hour)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incrby(key, amount)
                pipe.expire(key, (BUCKETS + 1) * HOUR)
                await pipe.execute()
        except Exception as exc:  # statistics must never fail a request
            log.warning("counter update failed", extra={"counter": name, "error": repr(exc)})

    async def last_24h(self, name: str) -> int:
        """Events in the current hour and the 23 before it."""
        hour = int(time.time()) // HOUR
        hours = range(hour - BUCKETS + 1, hour + 1)
        if self.redis is None:
            buckets = self._memory.get(name, {})
            return sum(buckets.get(h, 0) for h in hours)
        values = await self.redis.mget([self._key(name, h) for h in hours])
        return sum(int(v) for v in values if v is not None)
