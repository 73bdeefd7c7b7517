"""Account resolvers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptovault.documents.users import UserDocument
from cryptovault.schema import users as types
from cryptovault.schema.permissions import require_viewer

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


def to_user(doc: UserDocument) -> types.User:
    return types.User(
        id=doc.id,  # type: ignore[arg-type]
        email=doc.email,
        role=types.Role(doc.role),
        two_factor_enabled=doc.two_factor_enabled,
        frozen=doc.frozen,
        frozen_reason=doc.frozen_reason,
        created_at=doc.created_at,
        last_login_at=doc.last_login_at,
    )


async def viewer(info: Info) -> types.User | None:
    if info.context.viewer is None and info.context.auth_error is None:
        return None
    caller = require_viewer(info)
    user = await info.context.services.identity.get_user(caller.user_id)
    return to_user(user) if user is not None else None
