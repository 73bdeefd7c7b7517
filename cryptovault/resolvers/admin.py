"""Admin resolvers: return accounts and figures (schema/admin.py maps them)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptovault.admin.service import AccountStats
from cryptovault.documents.users import UserDocument
from cryptovault.paging import Page
from cryptovault.resolvers.access import require_viewer
from cryptovault.trading.stats import TradingStats, trading_stats

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


async def users(
    info: Info, first: int | None, after: str | None, search: str | None
) -> Page[UserDocument]:
    return await info.context.services.admin.users_page(first, after, search)


async def user(info: Info, user_id: str) -> UserDocument:
    return await info.context.services.admin.get_user(user_id)


async def set_frozen(info: Info, user_id: str, frozen: bool, reason: str | None) -> UserDocument:
    viewer = require_viewer(info)
    admin = info.context.services.admin
    return await admin.set_frozen(viewer, user_id, frozen, reason, info.context.origin)


async def revoke_user_sessions(info: Info, user_id: str) -> int:
    viewer = require_viewer(info)
    return await info.context.services.admin.revoke_sessions(viewer, user_id, info.context.origin)


async def stats(info: Info) -> tuple[AccountStats, TradingStats]:
    return await asyncio.gather(
        info.context.services.admin.account_stats(), trading_stats(datetime.now(UTC))
    )
