"""The rateLimit query: the budget as the protection extension left it for this
operation (already charged), or read without spending."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptovault.protection.limiter import BudgetStatus

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


async def rate_limit(info: Info) -> BudgetStatus:
    ctx = info.context
    status: BudgetStatus | None = ctx.state.get("budget")
    if status is None:
        status = await ctx.services.limiter.peek(ctx.budget_key)
    return status
