"""Price feeds. A feed is an async callable source of ticks: `run(emit)` produces ticks
until cancelled. `build_feed` picks one from the MARKET_FEED setting."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from cryptovault.config import Settings
from cryptovault.market.ticks import Tick

Emit = Callable[[Tick], Awaitable[None]]


class Feed(Protocol):
    name: str

    async def run(self, emit: Emit) -> None: ...


def build_feed(settings: Settings) -> Feed | None:
    from cryptovault.market.feeds.coinbase import CoinbaseFeed
    from cryptovault.market.feeds.replay import ReplayFeed
    from cryptovault.market.feeds.simulated import SimulatedFeed

    spec = settings.market_feed
    if spec == "none":
        return None
    if spec == "coinbase":
        return CoinbaseFeed()
    if spec.startswith("replay:"):
        return ReplayFeed(Path(spec.removeprefix("replay:")), speed=settings.replay_speed)
    return SimulatedFeed(interval_ms=settings.tick_interval_ms, seed=settings.feed_seed)
