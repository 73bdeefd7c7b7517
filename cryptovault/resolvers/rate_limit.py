"""The rateLimit query: the budget as the protection extension left it for this
operation (already charged), or read without spending."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptovault.schema import rate_limit as types

if TYPE_CHECKING:
    from cryptovault.schema.context import Info


async def rate_limit(info: Info) -> types.RateLimitStatus:
    from cryptovault.extensions.limits import identity_key

    ctx = info.context
    status = ctx.state.get("budget")
    if status is None:
        status = await ctx.services.limiter.peek(identity_key(ctx))
    return types.RateLimitStatus(
        limit=status.limit,
        remaining=status.remaining,
        cost=status.cost,
        reset_at=datetime.fromtimestamp(status.reset_at, UTC),
        window_seconds=status.window_seconds,
    )
