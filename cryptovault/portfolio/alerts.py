"""Price alerts: a user's ABOVE / BELOW / PERCENT_CHANGE_24H conditions on an asset,
fired once by the first tick that meets them.

How it holds together across instances (README "Portfolio, watchlists and alerts"):
- every instance keeps the active alerts in an AlertIndex, loaded from the store at
  start-up and kept current by "created"/"deleted"/"triggered" messages on the bus;
- only the feed leader checks ticks against its index; what it pops is marked
  TRIGGERED by one conditional update per alert (`status: ACTIVE` in the filter), so
  an alert fires once even if two instances try;
- the leader reloads its index when it becomes the leader and every RESYNC_EVERY, so a
  bus message it missed (a Redis reconnection) is caught up;
- the per-user cap is a single quota document listing the user's active alert ids,
  claimed with one conditional update: concurrent creations cannot pass it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from enum import StrEnum
from typing import Any

from bson import Decimal128
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from cryptovault.documents.alerts import AlertQuotaDocument, PriceAlertDocument
from cryptovault.documents.common import now_ms, to_decimal
from cryptovault.errors import BadUserInput, Conflict, NotFound
from cryptovault.events.bus import EventBus
from cryptovault.events.hub import Hub
from cryptovault.market.assets import Asset, get_asset
from cryptovault.market.service import MarketService
from cryptovault.market.ticks import Tick
from cryptovault.paging import Listing, Page, in_statuses, page
from cryptovault.portfolio.alert_index import AlertCondition, AlertIndex, Watch

log = logging.getLogger(__name__)

ALERTS_CHANNEL = "portfolio.alerts"
ALERTS = Listing("alert", default=50, maximum=200)
# The leader reloads its index this often (seconds), to catch up missed bus messages.
RESYNC_EVERY = 300.0
# Conditional updates in flight at once when many alerts fire on one tick.
FIRE_CONCURRENCY = 32
MAX_PRICE = Decimal("1e15")
PERCENT_STEP = Decimal("0.01")
MAX_PERCENT = Decimal("10000")


class AlertStatus(StrEnum):
    ACTIVE = "ACTIVE"
    TRIGGERED = "TRIGGERED"


def alert_topic(user_id: str) -> str:
    return f"alerts:{user_id}"


def watch_of(doc: PriceAlertDocument) -> Watch:
    return Watch(
        alert_id=doc.id,
        user_id=doc.user_id,
        symbol=doc.symbol,
        condition=AlertCondition(doc.condition),
        value=Decimal(doc.value),
    )


def checked_value(asset: Asset, condition: AlertCondition, value: Decimal) -> Decimal:
    """The alert's value in canonical form, or BAD_USER_INPUT saying what is wrong."""
    if not value.is_finite():
        raise BadUserInput("value must be a finite number", field="value")
    if condition is AlertCondition.PERCENT_CHANGE_24H:
        if value == 0 or not -100 < value <= MAX_PERCENT:
            raise BadUserInput(
                f"A 24 h change is a non-zero percentage above -100 and at most {MAX_PERCENT}",
                field="value",
            )
        if value % PERCENT_STEP:
            raise BadUserInput("A 24 h change has at most 2 decimal places", field="value")
        return value.quantize(PERCENT_STEP)
    if not 0 < value < MAX_PRICE:
        raise BadUserInput("A price must be positive", field="value")
    if value % asset.price_increment:
        raise BadUserInput(
            f"{asset.symbol} prices are multiples of {asset.price_increment}",
            field="value",
            priceIncrement=str(asset.price_increment),
        )
    return value.quantize(asset.price_increment)


def met(condition: AlertCondition, value: Decimal, price: Decimal, percent: Decimal | None) -> bool:
    """Whether a price (and 24 h change) meets a condition: the rule the index applies."""
    if condition is AlertCondition.ABOVE:
        return price >= value
    if condition is AlertCondition.BELOW:
        return price <= value
    if percent is None:
        return False
    return percent >= value if value > 0 else percent <= value


class PriceAlerts:
    def __init__(self, bus: EventBus, hub: Hub, market: MarketService, max_active: int) -> None:
        self.bus = bus
        self.hub = hub
        self.market = market
        self.max_active = max_active
        self.index = AlertIndex()
        self.fired = 0  # alerts this instance marked TRIGGERED
        # While a resync loads a fresh index: index changes to replay onto it.
        self._replay: list[Callable[[AlertIndex], object]] | None = None
        self._synced_at = float("-inf")
        self._was_follower = False
        self._resync_task: asyncio.Task[None] | None = None
        self._resync_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        bus.subscribe(ALERTS_CHANNEL, self._on_event)
        market.add_tick_listener(self.on_tick)

    # -- the index -------------------------------------------------------------------

    async def resync(self) -> None:
        """Load every active alert from the store into a fresh index and swap it in.
        Changes that arrive while loading are applied to both, so none is lost."""
        async with self._resync_lock:
            await self._load()

    async def _load(self) -> None:
        self._replay = []
        try:
            cursor = PriceAlertDocument.get_pymongo_collection().find(
                {"status": AlertStatus.ACTIVE.value},
                {"user_id": 1, "symbol": 1, "condition": 1, "value": 1},
            )
            fresh = AlertIndex(
                [
                    Watch(
                        alert_id=raw["_id"],
                        user_id=raw["user_id"],
                        symbol=raw["symbol"],
                        condition=AlertCondition(raw["condition"]),
                        value=to_decimal(raw["value"]),
                    )
                    async for raw in cursor
                ]
            )
            for change in self._replay:
                change(fresh)
            self.index = fresh
            self._synced_at = time.monotonic()
        finally:
            self._replay = None
        log.info("price alerts indexed", extra={"active": len(fresh)})

    def _change(self, change: Callable[[AlertIndex], object]) -> None:
        change(self.index)
        if self._replay is not None:
            self._replay.append(change)

    async def _resync_in_background(self) -> None:
        try:
            await self.resync()
        except Exception:
            log.exception("price alert resync failed; keeping the current index")
            self._synced_at = time.monotonic()  # retry after RESYNC_EVERY, not per tick
        finally:
            self._resync_task = None

    # -- the tick path ---------------------------------------------------------------

    def on_tick(self, tick: Tick) -> None:
        """Called by the market service for every accepted tick (synchronously: the
        crossed alerts leave the index before the next tick is looked at)."""
        if not self.market.is_leader:
            self._was_follower = True
            return
        if self._resync_task is None and (
            self._was_follower or time.monotonic() - self._synced_at > RESYNC_EVERY
        ):
            self._was_follower = False
            self._resync_task = self._spawn(self._resync_in_background())
        known: list[Decimal | None] = []  # the 24 h change, looked up at most once

        def change_percent() -> Decimal | None:
            if not known:
                known.append(self._change_percent(tick))
            return known[0]

        crossed = self.index.pop_crossed(tick.symbol, tick.price, change_percent)
        if not crossed:
            return
        if self._replay is not None:
            ids = [w.alert_id for w in crossed]
            self._replay.append(lambda index: [index.remove(i) for i in ids])
        # Recorded with the alerts: the change as of this tick, not of a later one.
        self._spawn(self._fire(crossed, tick, change_percent()))

    def _change_percent(self, tick: Tick) -> Decimal | None:
        quote = self.market.quote(tick.symbol)
        if quote is None or quote.day is None:
            return None
        return quote.day.change_percent(tick.price)

    async def _fire(self, crossed: Sequence[Watch], tick: Tick, percent: Decimal | None) -> None:
        at = tick.timestamp.replace(microsecond=tick.timestamp.microsecond // 1000 * 1000)
        fields: dict[str, Any] = {
            "status": AlertStatus.TRIGGERED.value,
            "triggered_at": at,
            "triggered_price": Decimal128(tick.price),
            "triggered_change_percent": Decimal128(percent) if percent is not None else None,
        }
        fired: dict[str, list[str]] = defaultdict(list)
        for start in range(0, len(crossed), FIRE_CONCURRENCY):
            batch = crossed[start : start + FIRE_CONCURRENCY]
            results = await asyncio.gather(*(self._mark(w, fields) for w in batch))
            for watch, ok in zip(batch, results, strict=True):
                if ok:
                    fired[watch.user_id].append(watch.alert_id)
        for user_id, ids in fired.items():
            await self._release(user_id, ids)

    async def _mark(self, watch: Watch, fields: dict[str, Any]) -> bool:
        """Mark one alert TRIGGERED if it still is ACTIVE; tell every instance."""
        try:
            raw = await PriceAlertDocument.get_pymongo_collection().find_one_and_update(
                {"_id": watch.alert_id, "status": AlertStatus.ACTIVE.value},
                {"$set": fields},
                return_document=ReturnDocument.AFTER,
            )
        except Exception:
            log.exception("could not mark a price alert triggered; will retry on a later tick")
            self._change(lambda index: index.add(watch))
            return False
        if raw is None:  # deleted meanwhile, or already fired
            return False
        self.fired += 1
        doc = PriceAlertDocument.model_validate(raw)
        try:
            await self.bus.publish(
                ALERTS_CHANNEL, {"op": "triggered", "alert": doc.model_dump(mode="json")}
            )
        except Exception:
            # Stored as triggered; only the live notification is lost.
            log.warning("could not publish a triggered price alert", exc_info=True)
        return True

    async def _on_event(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "created":
            watch = watch_of(PriceAlertDocument.model_validate(message["alert"]))
            self._change(lambda index: index.add(watch))
        elif op == "deleted":
            ids = [str(i) for i in message["ids"]]
            self._change(lambda index: [index.remove(i) for i in ids])
        elif op == "triggered":
            doc = PriceAlertDocument.model_validate(message["alert"])
            self._change(lambda index: index.remove(doc.id))
            self.hub.publish(alert_topic(doc.user_id), doc)

    # -- the user's alerts -----------------------------------------------------------

    async def create(
        self, user_id: str, symbol: str, condition: AlertCondition, value: Decimal
    ) -> PriceAlertDocument:
        asset = get_asset(symbol)
        value = checked_value(asset, condition, value)
        quote = self.market.quote(asset.symbol)
        if quote is not None:
            percent = quote.day.change_percent(quote.tick.price) if quote.day else None
            if met(condition, value, quote.tick.price, percent):
                raise BadUserInput(
                    f"{asset.symbol} already meets this condition (last price "
                    f"{quote.tick.price}, 24 h change {percent}%): it would fire at once",
                    field="value",
                    price=str(quote.tick.price),
                    changePercent24h=None if percent is None else str(percent),
                )
        doc = PriceAlertDocument(
            user_id=user_id,
            symbol=asset.symbol,
            condition=condition.value,
            value=value,
            created_at=now_ms(),
        )
        # Insert first, then claim a slot: a slot always names an alert that exists,
        # so a slot whose alert is no longer active is safe to reclaim.
        await doc.insert()
        if not await self._claim(user_id, doc.id):
            await PriceAlertDocument.get_pymongo_collection().delete_one(
                {"_id": doc.id, "status": AlertStatus.ACTIVE.value}
            )
            raise Conflict(
                f"At most {self.max_active} active price alerts: delete one first",
                maximum=self.max_active,
            )
        watch = watch_of(doc)
        self._change(lambda index: index.add(watch))
        await self._publish({"op": "created", "alert": doc.model_dump(mode="json")})
        return doc

    async def delete(self, user_id: str, alert_id: str) -> PriceAlertDocument:
        """Delete one of the user's alerts (active or triggered); NOT_FOUND for any
        other id."""
        raw = await PriceAlertDocument.get_pymongo_collection().find_one_and_delete(
            {"_id": alert_id, "user_id": user_id}
        )
        if raw is None:
            raise NotFound("No such price alert", id=alert_id)
        doc = PriceAlertDocument.model_validate(raw)
        if doc.status == AlertStatus.ACTIVE:
            await self._release(user_id, [doc.id])
        self._change(lambda index: index.remove(alert_id))
        await self._publish({"op": "deleted", "ids": [alert_id]})
        return doc

    async def forget_user(self, user_id: str) -> None:
        """Erase every alert of the user and their slots (account deletion); every
        instance drops them from its index."""
        alerts = PriceAlertDocument.get_pymongo_collection()
        ids = [str(i) for i in await alerts.distinct("_id", {"user_id": user_id})]
        await alerts.delete_many({"user_id": user_id})
        await AlertQuotaDocument.get_pymongo_collection().delete_one({"_id": user_id})
        if ids:
            self._change(lambda index: [index.remove(i) for i in ids])
            await self._publish({"op": "deleted", "ids": ids})

    async def page(
        self,
        user_id: str,
        first: int | None,
        after: str | None,
        statuses: Iterable[AlertStatus] | None = None,
        symbol: str | None = None,
    ) -> Page[PriceAlertDocument]:
        """The user's alerts, newest first."""
        first = ALERTS.size(first)  # BAD_USER_INPUT for `first` before the filters'
        query: dict[str, Any] = {"user_id": user_id, **in_statuses(statuses)}
        if symbol is not None:
            query["symbol"] = get_asset(symbol).symbol
        return await page(PriceAlertDocument, ALERTS, query, first, after)

    # -- the per-user cap ------------------------------------------------------------

    async def _claim(self, user_id: str, alert_id: str) -> bool:
        """Take one of the user's `max_active` slots for `alert_id`."""
        for attempt in range(2):
            try:
                await AlertQuotaDocument.get_pymongo_collection().update_one(
                    # No match when full: the upsert then collides with the _id.
                    {"_id": user_id, f"active.{self.max_active - 1}": {"$exists": False}},
                    {"$addToSet": {"active": alert_id}},
                    upsert=True,
                )
                return True
            except DuplicateKeyError:
                if attempt == 0 and not await self._reclaim(user_id):
                    return False
        return False

    async def _reclaim(self, user_id: str) -> bool:
        """Free slots whose alert is no longer active (a process stopped between
        firing or deleting an alert and releasing its slot). True if any was freed."""
        quota = await AlertQuotaDocument.get_pymongo_collection().find_one({"_id": user_id})
        held = list((quota or {}).get("active", []))
        if not held:
            return False
        live = await PriceAlertDocument.get_pymongo_collection().distinct(
            "_id", {"_id": {"$in": held}, "status": AlertStatus.ACTIVE.value}
        )
        stale = sorted(set(held) - set(live))
        if stale:
            await self._release(user_id, stale)
        return bool(stale)

    async def _release(self, user_id: str, alert_ids: list[str]) -> None:
        try:
            await AlertQuotaDocument.get_pymongo_collection().update_one(
                {"_id": user_id}, {"$pull": {"active": {"$in": alert_ids}}}
            )
        except Exception:
            # The next creation that finds the quota full reclaims these slots.
            log.warning("could not release price alert slots", exc_info=True)

    # -- plumbing --------------------------------------------------------------------

    async def _publish(self, message: dict[str, Any]) -> None:
        try:
            await self.bus.publish(ALERTS_CHANNEL, message)
        except Exception:
            # This instance's index is current; the leader's catches up at its next
            # resync (RESYNC_EVERY).
            log.warning("could not publish a price alert change", exc_info=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for the alerts being fired (and a resync in progress) to finish."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, timeout: float = 5.0) -> None:
        """Let alerts being fired finish (bounded), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), timeout)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
