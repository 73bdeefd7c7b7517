"""Price alerts in the schema: create, list, delete, and the live `alerts` stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry

from cryptovault.documents.alerts import PriceAlertDocument
from cryptovault.extensions.cost import cost
from cryptovault.portfolio.alert_index import AlertCondition
from cryptovault.portfolio.alerts import ALERTS, AlertStatus
from cryptovault.resolvers import alerts as resolve
from cryptovault.resolvers.context import Info
from cryptovault.schema.enums import register_enum
from cryptovault.schema.node import NODE_ID, Node
from cryptovault.schema.pagination import AFTER, Connection, connection, first_argument
from cryptovault.schema.permissions import (
    PORTFOLIO_READ,
    PORTFOLIO_WRITE,
    PRIVATE_STREAM_ENDS,
)

# Register the domain enums with the schema under their API names.
register_enum(
    AlertCondition,
    name="AlertCondition",
    description="When a price alert fires. ABOVE: the last price is at or above `value`. "
    "BELOW: at or below `value`. PERCENT_CHANGE_24H: `value` is a signed percentage; "
    "positive fires when the 24 h change is at or above it, negative when at or below it "
    "(e.g. 5 = up 5 %, -5 = down 5 %).",
    values={
        "ABOVE": "Fires when the last price is at or above `value` (USD).",
        "BELOW": "Fires when the last price is at or below `value` (USD).",
        "PERCENT_CHANGE_24H": "Fires when the 24 h change reaches `value` percent: at or "
        "above it when positive, at or below it when negative.",
    },
)
register_enum(
    AlertStatus,
    name="AlertStatus",
    description="ACTIVE until a tick meets the condition, then TRIGGERED (once, for good).",
    values={
        "ACTIVE": "Watching every tick.",
        "TRIGGERED": "Fired once (see triggeredAt, triggeredPrice); never fires again.",
    },
)


@strawberry.input(description="A new price alert.")
class CreatePriceAlertInput:
    symbol: str = strawberry.field(description='An asset symbol, e.g. "BTC".')
    condition: AlertCondition = strawberry.field(
        description="ABOVE, BELOW or PERCENT_CHANGE_24H: how `value` is read."
    )
    value: Decimal = strawberry.field(
        description="ABOVE/BELOW: a USD price, a positive multiple of the asset's "
        "`priceIncrement`. PERCENT_CHANGE_24H: a non-zero percentage with at most 2 "
        "decimals, above -100."
    )


@strawberry.type(description="A condition on an asset's price that notifies the viewer once.")
class PriceAlert(Node):
    id: strawberry.ID = strawberry.field(description=NODE_ID)
    symbol: str = strawberry.field(description='The asset watched, e.g. "BTC".')
    condition: AlertCondition = strawberry.field(
        description="How `value` is compared with each tick."
    )
    value: Decimal = strawberry.field(
        description="The USD price (ABOVE/BELOW) or signed percentage "
        "(PERCENT_CHANGE_24H), as Decimal."
    )
    status: AlertStatus = strawberry.field(description="ACTIVE, or TRIGGERED once it fired.")
    created_at: datetime = strawberry.field(description="When it was created.")
    triggered_at: datetime | None = strawberry.field(
        description="When the tick that met the condition was observed."
    )
    triggered_price: Decimal | None = strawberry.field(description="That tick's last price (USD).")
    triggered_change_percent24h: Decimal | None = strawberry.field(
        description="The 24 h change (percent) at that tick, when known."
    )

    @classmethod
    def from_domain(cls, doc: PriceAlertDocument) -> PriceAlert:
        return cls(
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


def _dec(value: object) -> Decimal | None:
    return None if value is None else Decimal(value)  # type: ignore[arg-type]


@strawberry.type
class AlertQuery:
    @strawberry.field(
        description="The viewer's price alerts, newest first; `status` and `symbol` filter "
        "them. API keys: `portfolio:read`.",
        permission_classes=PORTFOLIO_READ,
        metadata=cost(max_page=ALERTS.maximum),
    )
    async def price_alerts(
        self,
        info: Info,
        first: Annotated[int | None, first_argument(ALERTS)] = ALERTS.default,
        after: Annotated[str | None, AFTER] = None,
        status: Annotated[
            list[AlertStatus] | None,
            strawberry.argument(
                description="Only alerts in these statuses; omit for all, an empty list is "
                "BAD_USER_INPUT."
            ),
        ] = None,
        symbol: Annotated[
            str | None,
            strawberry.argument(
                description='Only alerts on this asset, e.g. "BTC"; unknown symbols are '
                "BAD_USER_INPUT."
            ),
        ] = None,
    ) -> Connection[PriceAlert]:
        return connection(
            await resolve.price_alerts(info, first, after, status, symbol), PriceAlert.from_domain
        )


@strawberry.type
class AlertMutation:
    @strawberry.mutation(
        description="Create a price alert. BAD_USER_INPUT for an unknown symbol, a bad "
        "value, or a condition the market already meets (it would fire at once); CONFLICT "
        "beyond ALERTS_MAX_ACTIVE (100 by default) active alerts. API keys: "
        "`portfolio:write`.",
        permission_classes=PORTFOLIO_WRITE,
    )
    async def create_price_alert(
        self,
        info: Info,
        input: Annotated[
            CreatePriceAlertInput,
            strawberry.argument(description="The alert's asset, condition and value."),
        ],
    ) -> PriceAlert:
        return PriceAlert.from_domain(
            await resolve.create(info, input.symbol, input.condition, input.value)
        )

    @strawberry.mutation(
        description="Delete one of the viewer's alerts (active or triggered) and return it; "
        "NOT_FOUND for any other id. API keys: `portfolio:write`.",
        permission_classes=PORTFOLIO_WRITE,
    )
    async def delete_price_alert(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="A PriceAlert id.")],
    ) -> PriceAlert:
        return PriceAlert.from_domain(await resolve.delete(info, id))


@strawberry.type
class AlertSubscription:
    @strawberry.subscription(
        description="The viewer's price alerts as they fire (each once). API keys: "
        "`portfolio:read`. " + PRIVATE_STREAM_ENDS,
        permission_classes=PORTFOLIO_READ,
    )
    async def alerts(self, info: Info) -> AsyncGenerator[PriceAlert]:
        async for doc in resolve.alert_stream(info):
            yield PriceAlert.from_domain(doc)
