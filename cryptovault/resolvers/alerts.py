"""Price alert resolvers: return the alert documents (schema/alerts.py maps them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import TYPE_CHECKING

from cryptovault.documents.alerts import PriceAlertDocument
from cryptovault.paging import Page
from cryptovault.portfolio.alert_index import AlertCondition
from cryptovault.portfolio.alerts import AlertStatus, alert_topic
from cryptovault.resolvers.access import require_viewer
from cryptovault.security.viewer import while_valid

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


async def price_alerts(
    info: Info,
    first: int | None,
    after: str | None,
    status: list[AlertStatus] | None,
    symbol: str | None,
) -> Page[PriceAlertDocument]:
    viewer = require_viewer(info)
    return await info.context.services.alerts.page(
        viewer.user_id, first, after, statuses=status, symbol=symbol
    )


async def create(
    info: Info, symbol: str, condition: AlertCondition, value: Decimal
) -> PriceAlertDocument:
    viewer = require_viewer(info)
    return await info.context.services.alerts.create(viewer.user_id, symbol, condition, value)


async def delete(info: Info, alert_id: str) -> PriceAlertDocument:
    viewer = require_viewer(info)
    return await info.context.services.alerts.delete(viewer.user_id, str(alert_id))


async def alert_stream(info: Info) -> AsyncIterator[PriceAlertDocument]:
    viewer = require_viewer(info)
    with info.context.services.hub.subscribe(alert_topic(viewer.user_id), maxsize=256) as sub:
        async for doc in while_valid(viewer, sub):
            yield doc
