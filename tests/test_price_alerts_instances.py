"""Price alerts across two app instances on one store and Redis: creations and
deletions reach every instance's index, the feed leader fires each alert once and every
instance delivers it to its subscribers. (A module of its own: starting other services
rebinds the document models to their store.)"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from cryptovault.documents.alerts import PriceAlertDocument
from cryptovault.documents.common import new_id
from cryptovault.portfolio.alert_index import AlertCondition
from cryptovault.services import start_services
from tests.conftest import REDIS_URL, make_settings, tick

WAIT = 10  # seconds: a bound for a message that should come, never an assertion


@pytest.mark.redis
async def test_two_instances_share_alert_changes_and_fire_each_alert_once(store_server):
    settings = make_settings(store_server.url, redis_url=REDIS_URL)
    a = await start_services(settings, feed=None)
    b = await start_services(settings, feed=None)
    try:
        async with asyncio.timeout(WAIT):
            while not (a.market.is_leader or b.market.is_leader):
                await asyncio.sleep(0.02)
        assert a.market.is_leader != b.market.is_leader
        follower = b if a.market.is_leader else a
        user_id = new_id()
        # Created through the follower: the leader learns it from the bus.
        alert = await follower.alerts.create(user_id, "BTC", AlertCondition.ABOVE, Decimal(200000))
        gone = await follower.alerts.create(user_id, "BTC", AlertCondition.ABOVE, Decimal(190000))
        async with asyncio.timeout(WAIT):
            while not all(alert.id in s.alerts.index for s in (a, b)):
                await asyncio.sleep(0.02)
        await follower.alerts.delete(user_id, gone.id)
        async with asyncio.timeout(WAIT):
            while any(gone.id in s.alerts.index for s in (a, b)):
                await asyncio.sleep(0.02)
        subs = [s.hub.subscribe(f"alerts:{user_id}") for s in (a, b)]
        await follower.market.publish_tick(tick("BTC", "200000.00"))
        await follower.market.publish_tick(tick("BTC", "200001.00"))
        # Each instance's subscribers hear it once.
        events = [await asyncio.wait_for(sub.queue.get(), WAIT) for sub in subs]
        assert [e.id for e in events] == [alert.id, alert.id]
        await a.alerts.drain()
        await b.alerts.drain()
        assert a.alerts.fired + b.alerts.fired == 1
        assert follower.alerts.fired == 0
        assert all(alert.id not in s.alerts.index for s in (a, b))
        assert all(sub.queue.empty() for sub in subs)
        assert (await PriceAlertDocument.get(alert.id)).status == "TRIGGERED"
    finally:
        await a.close()
        await b.close()
