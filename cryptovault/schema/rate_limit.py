"""The caller's cost budget, readable without spending it."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry

from cryptovault.extensions.cost import cost
from cryptovault.protection.limiter import BudgetStatus
from cryptovault.resolvers import rate_limit as resolve
from cryptovault.resolvers.context import Info


@strawberry.type(
    description="Your cost budget (per user, API key, or client IP when anonymous). "
    "Every operation spends its static cost; see extensions.cost in each response."
)
class RateLimitStatus:
    limit: int = strawberry.field(description="Points you may spend per window.")
    remaining: int = strawberry.field(description="Points left right now.")
    cost: int = strawberry.field(description="Points this operation was charged.")
    reset_at: datetime = strawberry.field(description="When the budget is full again.")
    window_seconds: int = strawberry.field(
        description="The window the limit applies to; points come back gradually over it."
    )

    @classmethod
    def from_domain(cls, status: BudgetStatus) -> RateLimitStatus:
        return cls(
            limit=status.limit,
            remaining=status.remaining,
            cost=status.cost,
            reset_at=datetime.fromtimestamp(status.reset_at, UTC),
            window_seconds=status.window_seconds,
        )


@strawberry.type
class RateLimitQuery:
    @strawberry.field(
        description="Your cost budget. Asking for it alone costs nothing.",
        metadata=cost(0),
    )
    async def rate_limit(self, info: Info) -> RateLimitStatus:
        return RateLimitStatus.from_domain(await resolve.rate_limit(info))
