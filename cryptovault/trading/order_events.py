"""The order-event message: an order's new state, as every instance hears it.

The engine publishes one on the bus (ORDERS_CHANNEL) after each change it commits;
each instance parses it once, here, into an `OrderEvent` and hands it to its
listeners, the way `MarketService.add_tick_listener` hands out ticks: the engine
(which passes it to the viewer's `orderUpdates` stream through the hub) and the
portfolio service (which marks the user's live valuation stale and snapshots after a
fill). On the wire it is the order document as JSON, so instances of different
versions read each other's messages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptovault.documents.enums import OrderStatus
from cryptovault.documents.trading import OrderDocument
from cryptovault.events.bus import EventBus

log = logging.getLogger(__name__)

ORDERS_CHANNEL = "orders"
FILL_STATUSES = (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED)


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """An order as it stands after a committed change."""

    order: OrderDocument

    @property
    def user_id(self) -> str:
        return self.order.user_id

    @property
    def last_trade_id(self) -> str | None:
        """The fill this change recorded, if it was a fill: "<order id>:<fill number>"."""
        if self.order.fills and self.order.status in FILL_STATUSES:
            return f"{self.order.id}:{self.order.fills - 1}"
        return None

    @classmethod
    def of(cls, stored: dict[str, Any]) -> OrderEvent:
        """From the order's stored document (its owner's journal, `work`, and its
        pending audit entries left out)."""
        return cls(
            OrderDocument.model_validate(
                {k: v for k, v in stored.items() if k not in ("work", "audit")}
            )
        )

    def to_message(self) -> dict[str, Any]:
        return self.order.model_dump(mode="json")

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> OrderEvent:
        return cls(OrderDocument.model_validate(message))


OrderListener = Callable[[OrderEvent], None]


class OrderEvents:
    """This instance's one reader of ORDERS_CHANNEL: parses each message once and
    calls every listener with the event. Listeners run on the bus's path: they must be
    quick and not block; a failing listener is logged, not fatal."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._listeners: list[OrderListener] = []
        bus.subscribe(ORDERS_CHANNEL, self._on_message)

    def add_listener(self, listener: OrderListener) -> None:
        self._listeners.append(listener)

    async def publish(self, event: OrderEvent) -> None:
        await self.bus.publish(ORDERS_CHANNEL, event.to_message())

    async def _on_message(self, message: dict[str, Any]) -> None:
        event = OrderEvent.from_message(message)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("order listener failed", extra={"order_id": event.order.id})
