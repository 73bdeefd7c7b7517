"""Audit log resolvers: return the entries (schema/audit.py maps them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.errors import BadUserInput
from cryptovault.paging import Page
from cryptovault.resolvers.access import require_viewer
from cryptovault.security.audit import AUDIT, security_topic
from cryptovault.security.viewer import while_valid

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info


async def audit_log(
    info: Info,
    first: int | None,
    after: str | None,
    user_id: str | None,
    action: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditEntryDocument]:
    AUDIT.size(first)  # BAD_USER_INPUT for `first` before the period's
    if since is not None and until is not None and since >= until:
        raise BadUserInput("`from` must be before `to`", field="from")
    return await info.context.services.audit.page(
        first, after, user_id=user_id, action=action, since=since, until=until
    )


async def security_events(
    info: Info, first: int | None, after: str | None
) -> Page[AuditEntryDocument]:
    viewer = require_viewer(info)
    return await info.context.services.audit.page(first, after, own_user_id=viewer.user_id)


async def security_event_stream(info: Info) -> AsyncIterator[AuditEntryDocument]:
    viewer = require_viewer(info)
    with info.context.services.hub.subscribe(security_topic(viewer.user_id), maxsize=64) as sub:
        async for entry in while_valid(viewer, sub):
            yield entry
