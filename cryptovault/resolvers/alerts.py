"""Price alert resolvers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from cryptovault.documents.alerts import PriceAlertDocument
from cryptovault.portfolio.alert_index import AlertCondition
from cryptovault.portfolio.alerts import MAX_PAGE, AlertStatus, alert_topic
from cryptovault.schema import alerts as types
from cryptovault.schema.pagination import (
    Connection,
    check_page_size,
    connection,
    decode_time_cursor,
    encode_time_cursor,
    items_before,
)
from cryptovault.schema.permissions import require_viewer
from cryptovault.security.viewer import while_valid

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info

CURSOR = "alert"


def _dec(value: object) -> Decimal | None:
    return None if value is None else Decimal(value)  # type: ignore[arg-type]


def to_alert(doc: PriceAlertDocument) -> types.PriceAlert:
    return types.PriceAlert(
        id=doc.id,  # type: ignore[arg-type]
        symbol=doc.symbol,
        condition=AlertCondition(doc.condition),
        value=Decimal(doc.value),
        status=AlertStatus(doc.status),
        created_at=doc.created_at,
        triggered_at=doc.triggered_at,
        triggered_price=_dec(doc.triggered_price),
        triggered_change_percent24h=_dec(doc.triggered_change_percent),
    )


async def price_alerts(
    info: Info,
    first: int | None,
    after: str | None,
    status: list[AlertStatus] | None,
    symbol: str | None,
) -> Connection[types.PriceAlert]:
    viewer = require_viewer(info)
    size = check_page_size(first, 50, MAX_PAGE)
    position = decode_time_cursor(CURSOR, after) if after is not None else None
    alerts = info.context.services.alerts
    found, more = await alerts.page(viewer.user_id, size, position, statuses=status, symbol=symbol)

    async def newest() -> tuple[datetime, str] | None:
        top, _ = await alerts.page(viewer.user_id, 1, None, statuses=status, symbol=symbol)
        return (top[0].created_at, top[0].id) if top else None

    return connection(
        found,
        lambda a: encode_time_cursor(CURSOR, a.created_at, a.id),
        to_alert,
        has_next=more,
        has_previous=await items_before(position, newest),
    )


async def create(info: Info, input: types.CreatePriceAlertInput) -> types.PriceAlert:
    viewer = require_viewer(info)
    doc = await info.context.services.alerts.create(
        viewer.user_id, input.symbol, input.condition, input.value
    )
    return to_alert(doc)


async def delete(info: Info, alert_id: str) -> types.PriceAlert:
    viewer = require_viewer(info)
    return to_alert(await info.context.services.alerts.delete(viewer.user_id, str(alert_id)))


async def alert_stream(info: Info) -> AsyncIterator[types.PriceAlert]:
    viewer = require_viewer(info)
    with info.context.services.hub.subscribe(alert_topic(viewer.user_id), maxsize=256) as sub:
        async for doc in while_valid(viewer, sub):
            yield to_alert(doc)
