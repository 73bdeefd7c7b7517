"""Admin resolvers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptovault.resolvers.users import to_user
from cryptovault.schema import admin as types
from cryptovault.schema.pagination import (
    Connection,
    check_page_size,
    connection,
    decode_time_cursor,
    encode_time_cursor,
    items_before,
)
from cryptovault.schema.permissions import require_viewer
from cryptovault.schema.users import User
from cryptovault.trading.stats import trading_stats

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info

CURSOR = "user"
MAX_PAGE = 200


async def users(
    info: Info, first: int | None, after: str | None, search: str | None
) -> Connection[User]:
    size = check_page_size(first, 50, MAX_PAGE)
    position = decode_time_cursor(CURSOR, after) if after is not None else None
    admin = info.context.services.admin
    found, more, total = await admin.users_page(size, position, search)

    async def newest() -> tuple[datetime, str] | None:
        top, _, _ = await admin.users_page(1, None, search)
        return (top[0].created_at, top[0].id) if top else None

    return connection(
        found,
        lambda u: encode_time_cursor(CURSOR, u.created_at, u.id),
        to_user,
        has_next=more,
        has_previous=await items_before(position, newest),
        total_count=total,
    )


async def user(info: Info, user_id: str) -> User:
    return to_user(await info.context.services.admin.get_user(user_id))


async def set_frozen(info: Info, user_id: str, frozen: bool, reason: str | None) -> User:
    viewer = require_viewer(info)
    admin = info.context.services.admin
    return to_user(await admin.set_frozen(viewer, user_id, frozen, reason, info.context.origin))


async def revoke_user_sessions(info: Info, user_id: str) -> int:
    viewer = require_viewer(info)
    return await info.context.services.admin.revoke_sessions(viewer, user_id, info.context.origin)


async def stats(info: Info) -> types.SystemStats:
    s, t = await asyncio.gather(
        info.context.services.admin.account_stats(), trading_stats(datetime.now(UTC))
    )
    return types.SystemStats(
        users=s.users,
        active_users24h=s.active_users_24h,
        signups24h=s.signups_24h,
        failed_logins24h=s.failed_logins_24h,
        rate_limit_rejections24h=s.rate_limit_rejections_24h,
        websocket_connections=s.websocket_connections,
        active_subscriptions=s.active_subscriptions,
        orders24h=t.orders_24h,
        trades24h=t.trades_24h,
        trade_volume24h=t.trade_volume_24h,
        open_orders=t.open_orders,
    )
