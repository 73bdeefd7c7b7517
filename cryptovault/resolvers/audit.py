"""Audit log resolvers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from strawberry.scalars import JSON

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.errors import BadUserInput
from cryptovault.schema import audit as types
from cryptovault.schema.pagination import (
    Connection,
    check_page_size,
    connection,
    decode_time_cursor,
    encode_time_cursor,
    items_before,
)
from cryptovault.schema.permissions import require_viewer
from cryptovault.security.audit import MAX_PAGE, security_topic
from cryptovault.security.viewer import while_valid

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Info

CURSOR = "audit"


def to_entry(doc: AuditEntryDocument) -> types.AuditEntry:
    return types.AuditEntry(
        id=doc.id,  # type: ignore[arg-type]
        at=doc.at,
        action=doc.action,
        actor_id=doc.actor_id,  # type: ignore[arg-type]
        actor_api_key_id=doc.actor_api_key_id,  # type: ignore[arg-type]
        user_id=doc.user_id,  # type: ignore[arg-type]
        target=doc.target,
        ip=doc.ip,
        user_agent=doc.user_agent,
        request_id=doc.request_id,
        details=JSON(doc.details),
    )


async def _entries(
    info: Info, first: int, after: str | None, **filters: Any
) -> Connection[types.AuditEntry]:
    """A newest-first page of the entries matching `filters` (AuditLog.page's)."""
    audit = info.context.services.audit
    position = decode_time_cursor(CURSOR, after) if after is not None else None
    found, more = await audit.page(first, position, **filters)

    async def newest() -> tuple[datetime, str] | None:
        top, _ = await audit.page(1, None, **filters)
        return (top[0].at, top[0].id) if top else None

    return connection(
        found,
        lambda e: encode_time_cursor(CURSOR, e.at, e.id),
        to_entry,
        has_next=more,
        has_previous=await items_before(position, newest),
    )


async def audit_log(
    info: Info,
    first: int | None,
    after: str | None,
    user_id: str | None,
    action: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Connection[types.AuditEntry]:
    size = check_page_size(first, 50, MAX_PAGE)
    if since is not None and until is not None and since >= until:
        raise BadUserInput("`from` must be before `to`", field="from")
    return await _entries(
        info, size, after, user_id=user_id, action=action, since=since, until=until
    )


async def security_events(
    info: Info, first: int | None, after: str | None
) -> Connection[types.AuditEntry]:
    viewer = require_viewer(info)
    size = check_page_size(first, 50, MAX_PAGE)
    return await _entries(info, size, after, own_user_id=viewer.user_id)


async def security_event_stream(info: Info) -> AsyncIterator[types.AuditEntry]:
    viewer = require_viewer(info)
    with info.context.services.hub.subscribe(security_topic(viewer.user_id), maxsize=64) as sub:
        async for entry in while_valid(viewer, sub):
            yield to_entry(entry)
