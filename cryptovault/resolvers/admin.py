"""Admin resolvers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptovault.resolvers.users import to_user
from cryptovault.schema import admin as types
from cryptovault.schema.pagination import (
    Connection,
    PageInfo,
    build_edges,
    check_page_size,
    decode_time_cursor,
    encode_time_cursor,
)
from cryptovault.schema.permissions import require_viewer
from cryptovault.schema.users import User

if TYPE_CHECKING:
    from cryptovault.schema.context import Info

CURSOR = "user"
MAX_PAGE = 200


async def users(
    info: Info, first: int | None, after: str | None, search: str | None
) -> Connection[User]:
    size = check_page_size(first, 50, MAX_PAGE)
    position = decode_time_cursor(CURSOR, after) if after is not None else None
    found, more, total = await info.context.services.admin.users_page(size, position, search)
    edges, end = build_edges(
        found, lambda u: encode_time_cursor(CURSOR, u.created_at, u.id), to_user
    )
    return Connection(
        edges=edges, page_info=PageInfo(has_next_page=more, end_cursor=end), total_count=total
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
    s = await info.context.services.admin.account_stats()
    return types.SystemStats(
        users=s.users,
        active_users24h=s.active_users_24h,
        signups24h=s.signups_24h,
        failed_logins24h=s.failed_logins_24h,
        rate_limit_rejections24h=s.rate_limit_rejections_24h,
        websocket_connections=s.websocket_connections,
        active_subscriptions=s.active_subscriptions,
    )
