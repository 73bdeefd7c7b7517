"""The event bus between app instances. Messages are JSON objects on named channels.
`MemoryBus` serves one instance; `RedisBus` uses Redis pub/sub so that every instance
receives every message (including its own), through the same handler path.

A handler receives exactly what a JSON round trip of the published message gives,
whichever bus carries it. A typed `Channel` carries values of one type (encoded to
and decoded from JSON objects): its handlers receive
`decode(loads(dumps(encode(value))))`. In process, when the channel says that is
`value` itself (`Channel.exact`), `MemoryBus` hands over `value` without the round
trip: the hot path of the price ticks.

Pub/sub keeps nothing for a disconnected listener: whatever was published while an
instance's connection was down is lost to it. `on_reconnect` handlers run after each
resubscription, so state built from messages can be read again from the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[dict[str, Any]], Awaitable[None]]
ValueHandler = Callable[[T], Awaitable[None]]
ReconnectHandler = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True, eq=False)
class Channel(Generic[T]):
    """A channel whose messages are values of one type, carried as JSON objects.

    `exact(value)` must be True only when `decode(loads(dumps(encode(value))))` would
    be `value` itself: equal, and made of the same types (Decimal exponents, time
    zones included). It is asked on every in-process publish, so it should be cheap;
    saying False is always safe (the value then makes the round trip)."""

    name: str
    encode: Callable[[T], dict[str, Any]]
    decode: Callable[[dict[str, Any]], T]
    exact: Callable[[T], bool]


class EventBus(Protocol):
    def subscribe(self, channel: str, handler: Handler) -> None: ...
    def subscribe_values(self, channel: Channel[T], handler: ValueHandler[T]) -> None: ...
    def on_reconnect(self, handler: ReconnectHandler) -> None: ...
    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...
    async def publish_value(self, channel: Channel[T], value: T) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


# A channel's handlers in subscription order: (handler, True when it takes the
# channel's values, False when it takes JSON objects).
_Entries = list[tuple[Callable[[Any], Awaitable[None]], bool]]
_MISSING: Any = object()


def _round_trip(message: dict[str, Any]) -> dict[str, Any]:
    """What a message is once it went over the wire."""
    return orjson.loads(orjson.dumps(message))  # type: ignore[no-any-return]


class _Handlers:
    """Every bus's handler table: plain and typed handlers per channel name."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entries] = defaultdict(list)
        self.channels: dict[str, Channel[Any]] = {}

    def add(self, name: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        self.entries[name].append((handler, False))

    def add_typed(self, channel: Channel[Any], handler: Callable[[Any], Awaitable[None]]) -> None:
        known = self.channels.setdefault(channel.name, channel)
        if known is not channel:
            raise ValueError(f"channel {channel.name!r} already carries another type")
        self.entries[channel.name].append((handler, True))

    async def dispatch(
        self, name: str, message: dict[str, Any] | None, value: Any = _MISSING
    ) -> None:
        """Run `name`'s handlers, each with what it takes: the JSON object `message`
        (from the wire, or a round trip) or the channel's value (`value` when given:
        an exact value; otherwise decoded from `message`, once for all of them)."""
        entries = self.entries.get(name)
        if not entries:
            return
        channel = self.channels.get(name)
        for handler, typed in entries:
            try:
                if typed:
                    if value is _MISSING:
                        assert channel is not None and message is not None
                        value = channel.decode(message)
                    await handler(value)
                else:
                    if message is None:
                        assert channel is not None
                        message = _round_trip(channel.encode(value))
                    await handler(message)
            except Exception:
                log.exception("event handler failed", extra={"channel": name})


class MemoryBus:
    def __init__(self) -> None:
        self._handlers = _Handlers()

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.add(channel, handler)

    def subscribe_values(self, channel: Channel[T], handler: ValueHandler[T]) -> None:
        self._handlers.add_typed(channel, handler)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        pass  # in-process delivery loses nothing

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        # Round-trip through JSON so in-process delivery sees what Redis would carry.
        await self._handlers.dispatch(channel, _round_trip(message))

    async def publish_value(self, channel: Channel[T], value: T) -> None:
        if channel.exact(value):
            # The round trip would give `value` back: skip it.
            await self._handlers.dispatch(channel.name, None, value)
        else:
            await self._handlers.dispatch(channel.name, _round_trip(channel.encode(value)))

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


class RedisBus:
    def __init__(self, redis: aioredis.Redis, prefix: str = "cryptovault:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._handlers = _Handlers()
        self._reconnect_handlers: list[ReconnectHandler] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def subscribe(self, channel: str, handler: Handler) -> None:
        if self._task is not None:
            raise RuntimeError("subscribe before start()")
        self._handlers.add(channel, handler)

    def subscribe_values(self, channel: Channel[T], handler: ValueHandler[T]) -> None:
        if self._task is not None:
            raise RuntimeError("subscribe before start()")
        self._handlers.add_typed(channel, handler)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        self._reconnect_handlers.append(handler)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self.redis.publish(self.prefix + channel, orjson.dumps(message))

    async def publish_value(self, channel: Channel[T], value: T) -> None:
        await self.publish(channel.name, channel.encode(value))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="redis-bus")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            connection = None
            try:
                channels = [self.prefix + c for c in self._handlers.entries] or [self.prefix + "_"]
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
                    await self._handlers.dispatch(name, message)
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
