"""The event bus between app instances. Messages are JSON objects on named channels.
`MemoryBus` serves one instance; `RedisBus` uses Redis pub/sub so that every instance
receives every message (including its own), through the same handler path.

Pub/sub keeps nothing for a disconnected listener: whatever was published while an
instance's connection was down is lost to it. `on_reconnect` handlers run after each
resubscription, so state built from messages can be read again from the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None]]
ReconnectHandler = Callable[[], Awaitable[None]]


class EventBus(Protocol):
    def subscribe(self, channel: str, handler: Handler) -> None: ...
    def on_reconnect(self, handler: ReconnectHandler) -> None: ...
    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


async def _dispatch(handlers: list[Handler], channel: str, message: dict[str, Any]) -> None:
    for handler in handlers:
        try:
            await handler(message)
        except Exception:
            log.exception("event handler failed", extra={"channel": channel})


class MemoryBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel].append(handler)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        pass  # in-process delivery loses nothing

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        # Round-trip through JSON so in-process delivery sees what Redis would carry.
        await _dispatch(
            self._handlers.get(channel, []), channel, orjson.loads(orjson.dumps(message))
        )

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


class RedisBus:
    def __init__(self, redis: aioredis.Redis, prefix: str = "cryptovault:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._reconnect_handlers: list[ReconnectHandler] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def subscribe(self, channel: str, handler: Handler) -> None:
        if self._task is not None:
            raise RuntimeError("subscribe before start()")
        self._handlers[channel].append(handler)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        self._reconnect_handlers.append(handler)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self.redis.publish(self.prefix + channel, orjson.dumps(message))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="redis-bus")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            connection = None
            try:
                channels = [self.prefix + c for c in self._handlers] or [self.prefix + "_"]
                await pubsub.subscribe(*channels)
                if self._ready.is_set():
                    await self._reconnected()
                # redis-py also reconnects (and resubscribes) by itself, silently:
                # hear of that too. Registered after the first connect, so it runs
                # only on a reconnect, after redis-py's own resubscription.
                connection = pubsub.connection
                if connection is not None:
                    connection.register_connect_callback(self._on_connect)
                self._ready.set()
                delay = 0.2
                async for item in pubsub.listen():
                    if item.get("type") != "message":
                        continue
                    channel = item["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    name = channel.removeprefix(self.prefix)
                    try:
                        message = orjson.loads(item["data"])
                    except orjson.JSONDecodeError:
                        log.warning(
                            "bus: dropped a message that is not JSON", extra={"channel": name}
                        )
                        continue
                    await _dispatch(self._handlers.get(name, []), name, message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bus: redis connection lost, resubscribing", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
            finally:
                if connection is not None:
                    connection.deregister_connect_callback(self._on_connect)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _on_connect(self, connection: object) -> None:
        log.warning("bus: redis connection re-established")
        await self._reconnected()

    async def _reconnected(self) -> None:
        for handler in self._reconnect_handlers:
            try:
                await handler()
            except Exception:
                log.exception("bus: reconnect handler failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
