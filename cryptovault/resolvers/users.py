"""Account resolvers: return the account (schema/users.py maps it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptovault.documents.users import UserDocument
from cryptovault.resolvers.access import require_viewer

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


async def viewer(info: Info) -> UserDocument | None:
    if info.context.viewer is None and info.context.auth_error is None:
        return None
    caller = require_viewer(info)
    return await info.context.services.identity.get_user(caller.user_id)
