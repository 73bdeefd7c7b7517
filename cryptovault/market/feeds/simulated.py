"""Simulated prices: geometric Brownian motion per asset, seeded for reproducible runs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from decimal import Decimal, localcontext

from cryptovault.market.assets import ASSETS, Asset
from cryptovault.market.feeds import Emit
from cryptovault.market.ticks import Tick, quote

SECONDS_PER_YEAR = Decimal(365 * 24 * 3600)


class SimulatedFeed:
    name = "simulated"

    def __init__(
        self,
        interval_ms: int = 1000,
        seed: int | None = None,
        assets: Iterable[Asset] | None = None,
    ) -> None:
        self.interval = interval_ms / 1000
        self.assets = list(assets or ASSETS.values())
        self.rng = random.Random(seed)
        self.prices = {a.symbol: a.start_price for a in self.assets}
        dt = Decimal(interval_ms) / 1000 / SECONDS_PER_YEAR
        # Per-step GBM terms: drift (zero expected return) and diffusion scale.
        self._terms = {
            a.symbol: (-(a.volatility**2) * dt / 2, a.volatility * dt.sqrt()) for a in self.assets
        }
        self.seq = 0

    def step(self) -> list[Tick]:
        """Advance every asset by one interval and return the new ticks."""
        ticks = []
        self.seq += 1
        with localcontext() as ctx:
            ctx.prec = 28
            for asset in self.assets:
                drift, scale = self._terms[asset.symbol]
                z = Decimal(repr(self.rng.gauss(0.0, 1.0)))
                price = self.prices[asset.symbol] * (drift + scale * z).exp()
                price = max(price, asset.price_increment)
                self.prices[asset.symbol] = price
                # Traded volume per tick: ~ $20k notional on average, log-normal.
                notional = Decimal(repr(self.rng.lognormvariate(9.5, 1.0)))
                ticks.append(quote(asset, price, notional / price, self.name, seq=self.seq))
        return ticks

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            for tick in self.step():
                await emit(tick)
            next_at += self.interval
            delay = next_at - loop.time()
            if delay < 0:  # fell behind (e.g. a paused process): don't burst to catch up
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)
