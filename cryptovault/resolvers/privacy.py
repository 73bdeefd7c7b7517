"""Resolvers for the viewer's data export and account deletion."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryptovault.resolvers.access import require_viewer

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


async def export_my_data(info: Info) -> Any:
    viewer = require_viewer(info)
    # Its static cost is flat, but it reads everything the user has: a few an hour.
    await info.context.services.limiter.hit_export(viewer.user_id)
    return await info.context.services.privacy.export(viewer, info.context.origin)


async def delete_my_account(info: Info, password: str) -> bool:
    viewer = require_viewer(info)
    await info.context.services.privacy.delete_account(viewer, password, info.context.origin)
    return True
