"""Runs the price feed on exactly one instance: the holder of the feed lease. The
holder renews it; when it stops (crash, shutdown), another instance takes over
within one lease TTL."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cryptovault.events.lease import Lease
from cryptovault.market.feeds import Feed
from cryptovault.market.service import MarketService

log = logging.getLogger(__name__)


class FeedLeader:
    def __init__(
        self, feed: Feed | None, lease: Lease, market: MarketService, renew_every: float = 1.5
    ) -> None:
        self.feed = feed
        self.lease = lease
        self.market = market
        self.renew_every = renew_every
        self._loop_task: asyncio.Task[None] | None = None
        self._feed_task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self._feed_task is not None and not self._feed_task.done()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="feed-leader")

    async def _run(self) -> None:
        while True:
            try:
                held = await self.lease.acquire_or_renew()
            except Exception as exc:
                log.warning("feed lease check failed", extra={"error": repr(exc)})
                held = False
            if held and not self.leading:
                self._start_feed()
            elif not held and self._feed_task is not None:
                log.warning("feed lease lost; stopping the feed")
                await self._stop_feed()
            await asyncio.sleep(self.renew_every)

    def _start_feed(self) -> None:
        self.market.is_leader = True
        if self.feed is None:
            return
        log.info("feed lease acquired; starting feed", extra={"feed": self.feed.name})
        self._feed_task = asyncio.create_task(self._run_feed(self.feed), name="feed")

    async def _run_feed(self, feed: Feed) -> None:
        delay = 1.0
        while True:
            try:
                await feed.run(self.market.publish_tick)
                log.info("feed finished", extra={"feed": feed.name})
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("feed failed; restarting", extra={"feed": feed.name})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    async def _stop_feed(self) -> None:
        self.market.is_leader = False
        task, self._feed_task = self._feed_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self._stop_feed()
        with contextlib.suppress(Exception):
            await self.lease.release()
