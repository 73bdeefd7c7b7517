"""A leader lease: exactly one instance at a time holds it (and runs the price feed).
In Redis it is a key with a TTL, renewed by its holder and taken over when the holder
stops renewing; without Redis the single instance always holds it."""

from __future__ import annotations

import uuid
from typing import Protocol

import redis.asyncio as aioredis

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease(Protocol):
    holder: str

    async def acquire_or_renew(self) -> bool: ...
    async def release(self) -> None: ...


class LocalLease:
    def __init__(self) -> None:
        self.holder = uuid.uuid4().hex

    async def acquire_or_renew(self) -> bool:
        return True

    async def release(self) -> None:
        pass


class RedisLease:
    def __init__(self, redis: aioredis.Redis, key: str, ttl_ms: int = 5000) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.holder = uuid.uuid4().hex
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire_or_renew(self) -> bool:
        if await self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]):
            return True
        return bool(await self.redis.set(self.key, self.holder, nx=True, px=self.ttl_ms))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.holder])
